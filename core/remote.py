"""`RemoteModelService`: the model service over HTTP (Ray Serve, `model.serve`), as the cogs see it.

It implements `core.service.ModelServiceAPI` like the in-process service, so the cogs do not
change, and needs only aiohttp: a bot that talks to a remote service installs neither torch nor
Ray. Requests go out as JSON; answers stream back as NDJSON lines (`core.wire`).

What users get when things go wrong:
- the service cannot be reached (not up yet, restarting, network down): `ServiceOfflineError`,
  "the story engine is offline", at once; the next request tries again, so it recovers by itself;
- the replicas are saturated (Serve answers 503) or the replica's own queue is full: the
  "busy, try again" `QueueFullError`, as in process;
- a replica dies mid-stream: that user's stream ends with `GenerationFailedError`. A request is
  tried again only when nothing of it was streamed yet, so no story is ever written twice.

Stop is a disconnect: Serve cancels the request and the replica stops the row at its next step.
The stopped story's result is made here from the text and token count already received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import aiohttp

from core.config import Config
from core.errors import GenerationFailedError, QueueFullError, ServiceOfflineError
from core.limits import UserLimits
from core.service import (
    StopReason,
    StoryRequest,
    StoryResult,
    WhyProgress,
    WhyRequest,
    WhyResult,
)
from core.wire import (
    error_from_json,
    progress_from_json,
    story_request_to_json,
    story_result_from_json,
    why_request_to_json,
    why_result_from_json,
)

log = logging.getLogger(__name__)

OFFLINE = "The story engine is offline right now; please try again soon."
LOST = "The story engine lost this request partway (a model worker stopped). Please try again."
BUSY = "I'm busy: every story writer is taken and the queue is full. Please try again in a minute."
STOPPED_WHY = "The explanation was stopped."
CONNECT_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 2.0
READ_BUFFER = 2**22
"""Largest NDJSON line read (a /why result carries its pictures as base64)."""

EventT = TypeVar("EventT")
ResultT = TypeVar("ResultT")


class _Lost(Exception):
    """The connection broke before the request was accepted: safe to try once more."""


class RemoteStream(Generic[EventT, ResultT]):
    """One remote request being streamed (implements `core.service.Stream`).

    A reader task turns the response's lines into events and a result; `stop` disconnects.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        queue_position: int,
        on_line: Callable[[RemoteStream[EventT, ResultT], dict[str, Any]], None],
        on_stop: Callable[[RemoteStream[EventT, ResultT]], ResultT | BaseException],
        on_end: Callable[[], None],
    ) -> None:
        self.queue_position = queue_position
        self.replica: str | None = None
        self.text = ""
        self.tokens = 0
        self.started_at = time.monotonic()
        self._response = response
        self._on_line, self._on_stop, self._on_end = on_line, on_stop, on_end
        self._events: asyncio.Queue[EventT | None] = asyncio.Queue()
        self._result: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(), name="remote-stream")

    async def __aiter__(self) -> AsyncIterator[EventT]:
        while (event := await self._events.get()) is not None:
            yield event

    async def result(self) -> ResultT:
        return await asyncio.shield(self._result)

    @property
    def done(self) -> bool:
        return self._result.done()

    def stop(self) -> None:
        """Disconnect (the replica stops the row) and end with what was received so far."""
        if self.done:
            return
        self._reader.cancel()
        outcome = self._on_stop(self)
        if isinstance(outcome, BaseException):
            self.finish(None, outcome)
        else:
            self.finish(outcome)

    def push(self, event: EventT) -> None:
        if not self.done:
            self._events.put_nowait(event)

    def finish(self, result: ResultT | None, error: BaseException | None = None) -> None:
        if self.done:
            return
        if error is not None:
            self._result.set_exception(error)
            self._result.exception()  # retrieved: a caller that gave up must not log "never retrieved"
        else:
            self._result.set_result(result)
        self._events.put_nowait(None)
        self._on_end()

    async def _read(self) -> None:
        try:
            async for raw in self._response.content:
                if raw.strip():
                    self._on_line(self, json.loads(raw))
                if self.done:
                    return
            log.warning("a model replica ended a stream without its result (replica %s)", self.replica)
            self.finish(None, GenerationFailedError(LOST))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("lost a remote stream (replica %s): %s", self.replica, type(exc).__name__)
            self.finish(None, GenerationFailedError(LOST))
        finally:
            self._response.close()


def _story_line(stream: RemoteStream[str, StoryResult], data: dict[str, Any]) -> None:
    kind = data.get("type")
    if kind == "text":
        stream.text += data["text"]
        stream.tokens = int(data.get("tokens", stream.tokens))
        stream.push(data["text"])
    elif kind == "result":
        stream.finish(story_result_from_json(data))
    elif kind == "error":
        stream.finish(None, error_from_json(data))


def _why_line(stream: RemoteStream[WhyProgress, WhyResult], data: dict[str, Any]) -> None:
    kind = data.get("type")
    if kind == "progress":
        stream.push(progress_from_json(data))
    elif kind == "result":
        stream.finish(why_result_from_json(data))
    elif kind == "error":
        stream.finish(None, error_from_json(data))


class RemoteModelService:
    """The model service at `url` (a `python -m model.serve` deployment); see the module docstring."""

    def __init__(self, url: str, config: Config) -> None:
        self.url = url.rstrip("/")
        self.config = config
        self.limits = UserLimits(config.service)
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[RemoteStream[Any, Any]] = set()

    @property
    def max_prompt_tokens(self) -> int:
        return self.config.limits.max_prompt_tokens

    async def start(self) -> None:
        """Opens a connection pool only: an unreachable service must not stop the bot starting."""
        self._get_session()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self.config.service.request_timeout_s + 30
            )
            self._session = aiohttp.ClientSession(timeout=timeout, read_bufsize=READ_BUFFER)
        return self._session

    async def ready(self) -> bool:
        try:
            async with self._get_session().get(
                f"{self.url}/stories/ready", timeout=aiohttp.ClientTimeout(total=READY_TIMEOUT_S)
            ) as response:
                return response.status == 200 and bool((await response.json()).get("ready"))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False

    async def close(self) -> None:
        for stream in list(self._streams):
            stream.stop()
        if self._session is not None:
            await self._session.close()

    async def count_tokens(self, text: str) -> int:
        try:
            async with self._get_session().post(f"{self.url}/stories/count", json={"text": text}) as response:
                if response.status != 200:
                    raise ServiceOfflineError(OFFLINE)
                return int((await response.json())["tokens"])
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ServiceOfflineError(OFFLINE) from exc

    async def story(self, request: StoryRequest) -> RemoteStream[str, StoryResult]:
        def stopped(stream: RemoteStream[str, StoryResult]) -> StoryResult:
            return StoryResult(
                prompt=request.prompt,
                continuation=stream.text,
                seed=request.seed,
                settings=request.settings,
                new_tokens=stream.tokens,
                elapsed_s=time.monotonic() - stream.started_at,
                stop_reason=StopReason.STOPPED,
            )

        return await self._open("/stories/story", request.user_id, story_request_to_json(request), _story_line, stopped)

    async def why(self, request: WhyRequest) -> RemoteStream[WhyProgress, WhyResult]:
        return await self._open(
            "/why/why",
            request.user_id,
            why_request_to_json(request),
            _why_line,
            lambda _: GenerationFailedError(STOPPED_WHY),
        )

    async def _open(
        self,
        path: str,
        user_id: int,
        body: dict[str, Any],
        on_line: Callable[[Any, dict[str, Any]], None],
        on_stop: Callable[[Any], Any],
    ) -> RemoteStream[Any, Any]:
        """Send the request and wait for its first line: accepted (a stream) or refused (raised)."""
        self.limits.admit(user_id)
        try:
            try:
                response, first = await self._send(path, body)
            except _Lost:  # nothing was streamed: one more try cannot repeat anything the user saw
                response, first = await self._send(path, body)
        except _Lost:
            self.limits.release(user_id)
            raise GenerationFailedError(LOST) from None
        except BaseException:
            self.limits.release(user_id)
            raise
        ended = False

        def on_end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.limits.release(user_id)
                self._streams.discard(stream)

        stream = RemoteStream(response, int(first.get("queue_position", 0)), on_line, on_stop, on_end)
        stream.replica = first.get("replica")
        self._streams.add(stream)
        return stream

    async def _send(self, path: str, body: dict[str, Any]) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
        try:
            response = await self._get_session().post(f"{self.url}{path}", json=body)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if isinstance(exc, aiohttp.ServerDisconnectedError):
                raise _Lost from exc
            log.warning("the model service at %s is unreachable: %s", self.url, type(exc).__name__)
            raise ServiceOfflineError(OFFLINE) from exc
        try:
            if response.status == 503:
                raise QueueFullError(BUSY, retry_after=30.0)
            if response.status in (404, 502, 504):  # no application deployed yet, or a proxy in between
                raise ServiceOfflineError(OFFLINE)
            if response.status != 200:
                log.warning("the model service answered %d on %s", response.status, path)
                raise _Lost
            try:
                raw = await response.content.readline()
                first = json.loads(raw) if raw.strip() else None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise _Lost from exc
            if first is None:
                raise _Lost
            if first.get("type") == "error":
                raise error_from_json(first)
            if first.get("type") != "accepted":
                raise _Lost
        except BaseException:
            response.close()
            raise
        return response, first
