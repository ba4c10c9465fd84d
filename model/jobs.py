"""The two kinds of work the model service queues, and the stream each hands back to its caller.

A story and an explanation differ in how they run (stories batch; `/why` runs alone and needs
gradients) but not in how their caller sees them: both are a `JobStream` of events that ends in a
result or an error, so `/why` streams its progress the way `/story` streams its text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from core.errors import TaleweaverError
from core.service import StoryRequest, StoryResult, WhyProgress, WhyRequest, WhyResult

EventT = TypeVar("EventT")
ResultT = TypeVar("ResultT")


class JobStream(Generic[EventT, ResultT]):
    """One queued or running request as its caller sees it (implements `core.service.Stream`).

    Created and fed on the event loop; the worker thread reaches it only through the loop
    (`call_soon_threadsafe`) and through `stop_event`, which it polls between steps.
    """

    def __init__(self, queue_position: int) -> None:
        self.queue_position = queue_position
        self.first_event_at: float | None = None
        """time.monotonic() of the first event (for the time-to-first-text metric)."""
        self.stop_event = threading.Event()
        self._events: asyncio.Queue[EventT | None] = asyncio.Queue()
        self._result: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()

    async def __aiter__(self) -> AsyncIterator[EventT]:
        while (event := await self._events.get()) is not None:
            yield event

    async def result(self) -> ResultT:
        return await asyncio.shield(self._result)

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def done(self) -> bool:
        return self._result.done()

    def push(self, event: EventT) -> None:
        """On the loop: one more event for the caller (ignored once the stream has ended)."""
        if not self._result.done():
            if self.first_event_at is None:
                self.first_event_at = time.monotonic()
            self._events.put_nowait(event)

    def finish(self, result: ResultT | None, error: BaseException | None = None) -> None:
        """On the loop: end the stream with a result or an error; only the first call counts."""
        if self._result.done():
            return
        if error is not None:
            self._result.set_exception(error)
            self._result.exception()  # retrieved: a caller that gave up must not log "never retrieved"
        else:
            self._result.set_result(result)
        self._events.put_nowait(None)


StoryStream = JobStream[str, StoryResult]
WhyStream = JobStream[WhyProgress, WhyResult]


@dataclass(eq=False)
class _Job:
    """What both kinds share: whose it is, and whether its user's in-flight slot was given back."""

    user_id: int
    enqueued_at: float = field(default_factory=time.monotonic, init=False)
    released: bool = field(default=False, init=False)
    tokens: int = field(default=0, init=False)
    """Prompt and new tokens reserved for it in the service's token budget (stories only)."""
    """Given back once: when the job ends, whether alone, with its batch or by failing."""

    def fail(self, error: TaleweaverError) -> None:
        self.stream.finish(None, error)


@dataclass(eq=False)
class StoryJob(_Job):
    """A story; jobs with equal `key` (`model.decoding.batch_key`) can share a forward pass."""

    request: StoryRequest
    key: Hashable
    stream: StoryStream
    started_at: float = field(default=0.0, init=False)
    row_id: int = field(default=0, init=False)


@dataclass(eq=False)
class WhyJob(_Job):
    """An explanation: runs alone (it needs gradients), reports progress, can be stopped."""

    request: WhyRequest
    stream: WhyStream
