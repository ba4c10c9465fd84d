"""Clocks the stand-in reads to enforce time limits; tests inject a manual one."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds on a monotonic scale; only differences between two readings matter."""


def monotonic() -> float:
    """The default clock: the process's monotonic time."""
    return time.monotonic()


class ManualClock:
    """A clock that moves only when told to, so a test can jump past a 15-minute window at once."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._now += seconds
