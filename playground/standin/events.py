"""An append-only log of what happened, numbered, that the web page and tests can wait on."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """Something a watcher may care about: a message created or edited, a breach, a modal opened…"""

    seq: int
    kind: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "data": self.data}


class EventLog:
    """Keeps the latest `keep` events; waiting is by sequence number, so nothing is missed."""

    def __init__(self, keep: int = 5000) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=keep)
        self._seq = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        self._seq += 1
        event = Event(self._seq, kind, data)
        self._events.append(event)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        return event

    def since(self, seq: int) -> list[Event]:
        """Events numbered above `seq` that are still kept."""
        return [event for event in self._events if event.seq > seq]

    async def wait_since(self, seq: int, timeout: float) -> list[Event]:
        """Events above `seq`, waiting up to `timeout` seconds for the first; [] if none came."""
        events = self.since(seq)
        if events or timeout <= 0:
            return events
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return []
        finally:
            self._waiters.discard(waiter)
        return self.since(seq)
