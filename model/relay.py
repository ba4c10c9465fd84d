"""Carrying streamed story text from the worker thread to the event loop, a few times a second."""

from __future__ import annotations

import asyncio
import math
import threading
import time

from model.jobs import StoryStream

RELAY_INTERVAL_S = 0.25
"""Least time between two hand-overs of streamed text from the worker to the event loop, unless
the service says otherwise (`service.stream_interval_s`). Each
hand-over wakes the loop's thread, and the worker's steps were slower for it: the shipped model,
one story at a time through the service, wrote 236–309 tokens/s with 0.05 s against 326–349 with
1.0 s and 315–362 with 0.25 s (the same engine with no hand-overs: 314–387; one thread, Sapphire
Rapids). The cogs edit a message at most once a second, so four hand-overs a second lose nothing."""


class TextRelay:
    """Collects text in the worker and hands it over at most every `interval_s`.

    Handing every token of every row to the event loop on its own (`call_soon_threadsafe` per
    token) wakes the loop over a thousand times a second with the shipped model at batch 8 and
    makes the two threads take turns with the GIL. A stream's first text still goes at once
    (time to first text is what users see); the cogs edit their message at most once a second,
    so nobody sees the difference. `flush` on the loop delivers whatever is left, in order,
    before a stream is finished.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = RELAY_INTERVAL_S) -> None:
        self._loop = loop
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pending: dict[StoryStream, list[str]] = {}
        self._started: set[StoryStream] = set()
        self._last_handover = -math.inf
        self._scheduled = False

    def add(self, stream: StoryStream, delta: str) -> None:
        """From the worker thread: queue `delta` for `stream`, handing over when it is time."""
        with self._lock:
            self._pending.setdefault(stream, []).append(delta)
            first = stream not in self._started
            self._started.add(stream)
            now = time.monotonic()
            if self._scheduled or not (first or now - self._last_handover >= self._interval_s):
                return
            self._scheduled, self._last_handover = True, now
        self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """On the event loop: push every queued piece of text to its stream."""
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, {}, False
        for stream, deltas in pending.items():
            stream.push("".join(deltas))
