"""Event-loop lag: how late a timer fires. A blocked loop acknowledges Discord's interactions late."""

from __future__ import annotations

import asyncio
import time

from core.metrics import EVENT_LOOP_LAG

INTERVAL_S = 0.5


async def watch_loop_lag(interval: float = INTERVAL_S) -> None:
    """Run until cancelled, observing each timer's lateness in `taleweaver_event_loop_lag_seconds`."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(interval)
        EVENT_LOOP_LAG.observe(max(0.0, time.perf_counter() - started - interval))
