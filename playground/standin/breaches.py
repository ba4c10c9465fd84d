"""The record of every way the bot broke Discord's rules, for tests and the web page to read."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

from playground.standin.events import EventLog

log = logging.getLogger(__name__)

ACK_TIMEOUT = "ack_timeout"
"""No initial response within the acknowledgement deadline (3 s on Discord)."""
DOUBLE_RESPONSE = "double_response"
"""A second initial response to the same interaction."""
TOKEN_EXPIRED = "token_expired"
"""A follow-up or an edit through the interaction token after its 15 minutes."""
NOT_ACKNOWLEDGED = "not_acknowledged"
"""A follow-up or an edit of the original response before any initial response."""
LIMIT = "limit"
"""A payload over one of Discord's documented limits (`limits.py`)."""
MENTIONS = "mentions"
"""A message that does not disable every mention through allowed_mentions."""
INVALID_RESPONSE = "invalid_response"
"""An initial response of a type the interaction does not allow (say, an update to a command)."""
COMMANDS = "commands"
"""Application commands synced with a name, description or option Discord would reject."""


@dataclass(frozen=True)
class Breach:
    """One breach: which rule, what exactly, in answer to which interaction, on which route."""

    rule: str
    detail: str
    route: str
    interaction_id: int | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "detail": self.detail,
            "route": self.route,
            "interaction_id": str(self.interaction_id) if self.interaction_id else None,
            "at": self.at,
        }


class BreachLog:
    """Breaches in the order they happened; each is also logged and published as an event."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._breaches: list[Breach] = []

    def record(self, rule: str, detail: str, *, route: str, interaction_id: int | None = None) -> Breach:
        at = datetime.datetime.now(datetime.UTC).isoformat()
        breach = Breach(rule, detail, route, interaction_id, at)
        self._breaches.append(breach)
        log.warning("Discord rule broken (%s) on %s: %s", rule, route, detail)
        self._events.publish("breach", breach.to_json())
        return breach

    def all(self) -> list[Breach]:
        return list(self._breaches)

    def clear(self) -> None:
        self._breaches.clear()
