"""Per-user limits (requests in flight, requests a minute): kept in the bot when the model is remote.

The in-process `model.service.ModelService` counts the same things itself; a remote service's
replicas each see only part of a user's requests, so the bot's `RemoteModelService` holds the
limits for everyone, with the same messages.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque

from core.config import ServiceConfig
from core.errors import UserBusyError

RATE_WINDOW_S = 60.0
RATE_TABLE_MAX = 10_000
ALREADY_RUNNING = "You already have a request running; wait for it to finish (or press Stop)."


def rate_limited(started: int, wait_s: float) -> UserBusyError:
    """The answer to one request too many in the last minute (the same in process and remote)."""
    return UserBusyError(
        f"You've started {started} requests in the last minute, the most allowed. "
        f"Please try again in {math.ceil(wait_s)} s.",
        retry_after=wait_s,
    )


class UserLimits:
    """`admit` a user's request (or raise `UserBusyError`), `release` it when it ends."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._in_flight: Counter[int] = Counter()
        self._recent: dict[int, deque[float]] = {}

    def admit(self, user_id: int) -> None:
        if self._in_flight[user_id] >= self.config.per_user_in_flight:
            raise UserBusyError(ALREADY_RUNNING)
        now = time.monotonic()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= self.config.per_user_per_minute:
            wait = recent[0] + RATE_WINDOW_S - now
            raise rate_limited(len(recent), wait)
        recent.append(now)
        self._in_flight[user_id] += 1
        if len(self._recent) > RATE_TABLE_MAX:
            for user in [u for u, times in self._recent.items() if not times or times[-1] <= now - RATE_WINDOW_S]:
                del self._recent[user]

    def release(self, user_id: int) -> None:
        self._in_flight[user_id] -= 1
        if self._in_flight[user_id] <= 0:
            del self._in_flight[user_id]
