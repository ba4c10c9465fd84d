"""Snowflake ids like Discord's, so discord.py can read a creation time out of each one."""

from __future__ import annotations

import itertools
import time

DISCORD_EPOCH_MS = 1420070400000


class Snowflakes:
    """Hands out increasing snowflakes: milliseconds since Discord's epoch, then a counter."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._last = 0

    def next(self) -> int:
        """A new id, larger than every id handed out before."""
        stamp = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        candidate = stamp | (next(self._counter) & 0xFFF)
        self._last = max(candidate, self._last + 1)
        return self._last
