"""`RemoteModelService` against a plain aiohttp server that speaks the wire format: how each
answer of the model service (and each way it can fail) reaches the cogs. No Ray, no model."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from core.config import Config
from core.errors import GenerationFailedError, PromptError, QueueFullError, ServiceOfflineError, UserBusyError
from core.remote import BUSY, LOST, OFFLINE, RemoteModelService
from core.service import StopReason, StoryRequest, StoryResult
from core.settings import DecodingSettings
from core.wire import line, story_result_to_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SETTINGS = DecodingSettings(strategy="greedy", max_new_tokens=3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeServe:
    """An HTTP server on loopback whose `/stories/story` answer each test chooses."""

    def __init__(self, handler: Handler, port: int | None = None) -> None:
        self.handler, self.port, self.calls = handler, port or free_port(), 0
        self.runner: web.AppRunner | None = None

    async def _story(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        return await self.handler(request)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "replica": "fake"})

    async def __aenter__(self) -> FakeServe:
        app = web.Application()
        app.router.add_post("/stories/story", self._story)
        app.router.add_get("/stories/ready", self._ready)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def ndjson(request: web.Request, lines: list[dict], *, pause: float = 0.0) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for payload in lines:
        await response.write(line(payload))
        await asyncio.sleep(pause)
    await response.write_eof()
    return response


def result_line(text: str) -> dict:
    result = StoryResult("Once", text, 1, SETTINGS, 2, 0.1, StopReason.LENGTH)
    return {"type": "result", **story_result_to_json(result)}


ACCEPTED = {"type": "accepted", "queue_position": 2, "replica": "r1"}


@pytest.fixture
async def service() -> AsyncIterator[Callable[[str], Awaitable[RemoteModelService]]]:
    made: list[RemoteModelService] = []

    async def make(url: str) -> RemoteModelService:
        remote = RemoteModelService(url, Config())
        await remote.start()
        made.append(remote)
        return remote

    yield make
    for remote in made:
        await remote.close()


def request(user_id: int = 1) -> StoryRequest:
    return StoryRequest(user_id, "Once", SETTINGS, seed=1)


async def test_a_story_streams_its_text_then_its_result(service) -> None:
    lines = [ACCEPTED, {"type": "text", "text": " upon", "tokens": 1}, {"type": "text", "text": " a", "tokens": 2}]
    async with FakeServe(lambda r: ndjson(r, [*lines, result_line(" upon a")])) as fake:
        stream = await (await service(fake.url)).story(request())
        assert stream.queue_position == 2
        assert [delta async for delta in stream] == [" upon", " a"]
        assert (await stream.result()).continuation == " upon a"


@pytest.mark.parametrize(
    ("kind", "raised"),
    [("QueueFullError", QueueFullError), ("UserBusyError", UserBusyError), ("PromptError", PromptError)],
)
async def test_a_refusal_crosses_the_wire_as_the_same_error_and_message(service, kind, raised) -> None:
    refusal = {"type": "error", "kind": kind, "message": "exactly this", "retry_after": 5.0}
    async with FakeServe(lambda r: ndjson(r, [refusal])) as fake:
        remote = await service(fake.url)
        with pytest.raises(raised, match="^exactly this$"):
            await remote.story(request())
        remote.limits.admit(1)  # the refusal gave the user's slot back


async def test_saturated_replicas_503_are_the_usual_busy_answer(service) -> None:
    async def saturated(r: web.Request) -> web.Response:
        return web.Response(status=503)

    async with FakeServe(saturated) as fake:
        with pytest.raises(QueueFullError) as busy:
            await (await service(fake.url)).story(request())
        assert busy.value.message == BUSY and busy.value.message.startswith("I'm busy")


async def test_a_stream_cut_after_text_fails_politely_and_is_never_sent_again(service) -> None:
    async def cut(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(r)
        await response.write(line(ACCEPTED) + line({"type": "text", "text": " upon", "tokens": 1}))
        r.transport.close()  # the replica died
        return response

    async with FakeServe(cut) as fake:
        stream = await (await service(fake.url)).story(request())
        assert [delta async for delta in stream] == [" upon"]
        with pytest.raises(GenerationFailedError) as lost:
            await stream.result()
        assert lost.value.message == LOST
        assert fake.calls == 1


async def test_a_connection_dropped_before_acceptance_is_tried_once_more(service) -> None:
    async def flaky(r: web.Request) -> web.StreamResponse:
        if fake.calls == 1:
            r.transport.close()
            return web.Response()
        return await ndjson(r, [ACCEPTED, result_line("!")])

    async with FakeServe(flaky) as fake:
        stream = await (await service(fake.url)).story(request())
        assert (await stream.result()).continuation == "!"
        assert fake.calls == 2


async def test_offline_at_start_then_recovers_by_itself(service) -> None:
    port = free_port()
    remote = await service(f"http://127.0.0.1:{port}")
    assert not await remote.ready()
    with pytest.raises(ServiceOfflineError) as offline:
        await remote.story(request())
    assert offline.value.message == OFFLINE
    async with FakeServe(lambda r: ndjson(r, [ACCEPTED, result_line("!")]), port=port):
        assert await remote.ready()
        assert (await (await remote.story(request())).result()).continuation == "!"


async def test_one_request_per_user_in_flight_is_kept_in_the_bot(service) -> None:
    lines = [ACCEPTED, {"type": "text", "text": " a", "tokens": 1}, result_line(" a")]
    async with FakeServe(lambda r: ndjson(r, lines, pause=0.2)) as fake:
        remote = await service(fake.url)
        first = await remote.story(request(7))
        with pytest.raises(UserBusyError):
            await remote.story(request(7))
        await (await remote.story(request(8))).result()  # someone else is not held up
        await first.result()
        await (await remote.story(request(7))).result()


async def test_stop_disconnects_and_keeps_the_text_so_far(service) -> None:
    disconnected = asyncio.Event()

    async def endless(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(r)
        await response.write(line(ACCEPTED))
        try:
            for i in range(1000):
                await response.write(line({"type": "text", "text": f" w{i}", "tokens": i + 1}))
                await asyncio.sleep(0.02)
        except (ConnectionResetError, asyncio.CancelledError):
            disconnected.set()
            raise
        return response

    async with FakeServe(endless) as fake:
        stream = await (await service(fake.url)).story(request())
        seen: list[str] = []
        async for delta in stream:
            seen.append(delta)
            if len(seen) == 3:
                break
        stream.stop()
        result = await stream.result()
        assert result.stop_reason == StopReason.STOPPED and result.continuation.startswith("".join(seen))
        assert result.new_tokens >= 3
        await asyncio.wait_for(disconnected.wait(), 5)


def test_wire_lines_are_one_json_object_each() -> None:
    assert json.loads(line({"type": "text", "text": "a\nb"})) == {"type": "text", "text": "a\nb"}
    assert line({"a": 1}).count(b"\n") == 1
