"""Pacing the edits of a streaming reply: Discord rate-limits message edits."""

from __future__ import annotations

import time


class EditThrottle:
    """Lets an edit through at most once per `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = time.monotonic()

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False
