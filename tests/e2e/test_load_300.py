"""Load, issue 18: 300 interactions from 20 users within 30 seconds, mixed commands, against the real bot.

Kept as a test (marked slow) that reports answered / busy / unanswered / breaches, and writes its
figures to artifacts/load_300.json. Nothing may go unanswered and no Discord rule may be broken.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict
from typing import Any

import pytest

from playground.standin.client import DriverClient
from tests.e2e.harness import LOAD_USERS, ROOT, Rig
from tests.e2e.test_load import ACK_LIMIT_S, Flood, Sent, drain, send

ROUNDS = (
    ("story", {"prompt": "Once upon a time there lived a king", "length": 12}),
    ("settings show", {}),
    ("why", {"prompt": "The fox said to the crow"}),
    ("settings set", {"temperature": 0.9}),
    ("story", {"prompt": "The little mermaid swam up to the surface", "length": 20}),
)
REPEATS = 3
"""Five kinds of command, three times over, for each of the 20 users: 300 interactions."""
SPACING_S = 0.1
REPORT = ROOT / "artifacts" / "load_300.json"

pytestmark = pytest.mark.slow


def summary(flood: Flood) -> dict[str, Any]:
    acks = [s.acked_in_s for s in flood.sent if s.acked_in_s is not None]
    outcomes = Counter(s.outcome for s in flood.sent)
    return {
        "interactions_sent": len(flood.sent),
        "users": len({s.user for s in flood.sent}),
        "send_window_s": round(flood.send_window_s, 2),
        "answered": outcomes["result"],
        "busy": outcomes["busy"],
        "unanswered": outcomes[None] + outcomes["other"],
        "breaches": len(flood.breaches),
        "late_acks": sum(s.status != "acknowledged" or (s.acked_in_s or 0) > ACK_LIMIT_S for s in flood.sent),
        "worst_ack_s": round(max(acks, default=0.0), 3),
        "answered_twice": sum(s.shown > 1 for s in flood.sent),
        "drained_in_s": round(flood.drained_in_s, 2),
    }


async def run_flood(rig: Rig) -> Flood:
    flood = Flood()
    users = [f"load{i:02d}" for i in range(LOAD_USERS)]
    plan = [(user, command, options) for _ in range(REPEATS) for command, options in ROUNDS for user in users]
    flood.sent = [Sent(user, command, index * SPACING_S) for index, (user, command, _) in enumerate(plan)]
    loop = asyncio.get_running_loop()
    async with DriverClient(rig.api_base) as driver:
        start = loop.time()
        await asyncio.gather(*(send(driver, s, plan[i][2], start) for i, s in enumerate(flood.sent)))
        flood.send_window_s = max(s.sent_at_s for s in flood.sent)
        await drain(driver, flood)
        flood.drained_in_s = loop.time() - start
    return flood


def test_300_interactions_in_30_s_from_20_users_are_all_answered_without_a_breach(rig: Rig):
    rig.clear_breaches()
    flood = asyncio.run(run_flood(rig))
    flood.breaches = rig.breaches()
    figures = summary(flood)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(
        json.dumps({"figures": figures, "sent": [asdict(s) for s in flood.sent]}, indent=2, ensure_ascii=False),
        encoding="utf-8",
    )
    print(f"\nload figures ({REPORT}):\n{json.dumps(figures, indent=2)}")
    assert (figures["interactions_sent"], figures["users"]) == (300, 20)
    assert figures["send_window_s"] <= 30
    assert figures["unanswered"] == 0, [asdict(s) for s in flood.sent if s.outcome not in ("result", "busy")][:5]
    assert figures["breaches"] == 0, flood.breaches[:5]
    assert figures["late_acks"] == 0 and figures["answered_twice"] == 0
