"""Interactions sent to the bot and the timing rules on answering them.

Discord's rules: one initial response within 3 seconds of the interaction, then 15 minutes in
which the token may be used for follow-ups and edits. A missed deadline is recorded as a breach
when the deadline passes (so a bot that never answers is caught too), and a late answer gets
the 404 Discord would give.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

from playground.standin import breaches as rules
from playground.standin.breaches import BreachLog
from playground.standin.config import StandInConfig
from playground.standin.errors import ApiError, unknown
from playground.standin.events import EventLog

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
TYPE_NAMES = {
    APPLICATION_COMMAND: "command",
    MESSAGE_COMPONENT: "component",
    AUTOCOMPLETE: "autocomplete",
    MODAL_SUBMIT: "modal",
}

CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9
RESPONSE_NAMES = {
    CHANNEL_MESSAGE: "message",
    DEFERRED_CHANNEL_MESSAGE: "deferred",
    DEFERRED_UPDATE_MESSAGE: "deferred_update",
    UPDATE_MESSAGE: "update",
    AUTOCOMPLETE_RESULT: "autocomplete",
    MODAL: "modal",
}
ALLOWED_RESPONSES = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE, MODAL},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE},
}


@dataclass
class InteractionRecord:
    """One interaction and what the bot has done with it so far."""

    id: int
    token: str
    type: int
    user_id: int
    channel_id: int
    payload: dict[str, Any]
    created_at: float
    source_message_id: int | None = None
    response_type: int | None = None
    ack_missed: bool = False
    original_message_id: int | None = None
    followup_message_ids: list[int] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None
    modal: dict[str, Any] | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the interaction has its initial response or has missed the deadline."""

    @property
    def status(self) -> str:
        if self.response_type is not None:
            return "acknowledged"
        return "missed" if self.ack_missed else "pending"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "token": self.token,
            "type": TYPE_NAMES[self.type],
            "user_id": str(self.user_id),
            "channel_id": str(self.channel_id),
            "status": self.status,
            "response_type": RESPONSE_NAMES.get(self.response_type) if self.response_type else None,
            "original_message_id": str(self.original_message_id) if self.original_message_id else None,
            "followup_message_ids": [str(i) for i in self.followup_message_ids],
            "source_message_id": str(self.source_message_id) if self.source_message_id else None,
            "choices": self.choices,
            "modal": self.modal,
        }


class InteractionTracker:
    """Open interactions by id and token, with the deadline and lifetime checks on each answer."""

    def __init__(self, config: StandInConfig, breaches: BreachLog, events: EventLog) -> None:
        self._config = config
        self._breaches = breaches
        self._events = events
        self._by_id: dict[int, InteractionRecord] = {}
        self._by_token: dict[str, InteractionRecord] = {}
        self._deadlines: list[asyncio.TimerHandle] = []

    @staticmethod
    def new_token() -> str:
        return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)

    def open(self, record: InteractionRecord) -> None:
        """Track the interaction and start its acknowledgement deadline (real time)."""
        self._by_id[record.id] = record
        self._by_token[record.token] = record
        loop = asyncio.get_running_loop()
        self._deadlines = [
            handle for handle in self._deadlines if not handle.cancelled() and handle.when() > loop.time()
        ]
        self._deadlines.append(loop.call_later(self._config.ack_deadline_s, self._deadline_passed, record))
        self.publish(record)

    def close(self) -> None:
        """Cancel the pending deadlines: a stopped stand-in records no more breaches."""
        for handle in self._deadlines:
            handle.cancel()
        self._deadlines.clear()

    def get(self, interaction_id: int) -> InteractionRecord:
        return self._by_id[interaction_id]

    def by_token(self, token: str) -> InteractionRecord:
        try:
            return self._by_token[token]
        except KeyError:
            raise unknown("webhook") from None

    def publish(self, record: InteractionRecord) -> None:
        self._events.publish("interaction_update", record.to_json())

    def _deadline_passed(self, record: InteractionRecord) -> None:
        if record.response_type is None and not record.ack_missed:
            self._miss(record, "interaction callback")

    def _miss(self, record: InteractionRecord, route: str) -> None:
        record.ack_missed = True
        deadline = self._config.ack_deadline_s
        self._breaches.record(
            rules.ACK_TIMEOUT, f"no initial response within {deadline:g} s", route=route, interaction_id=record.id
        )
        record.settled.set()
        self.publish(record)

    def check_callback(self, record: InteractionRecord, response_type: int, route: str) -> None:
        """Raise what Discord answers to a late, second or ill-typed initial response."""
        late = self._config.clock() - record.created_at > self._config.ack_deadline_s
        if record.ack_missed or (late and record.response_type is None):
            if not record.ack_missed:
                self._miss(record, route)
            raise unknown("interaction")
        if record.response_type is not None:
            self._breaches.record(
                rules.DOUBLE_RESPONSE,
                f"the interaction already has its initial response ({RESPONSE_NAMES.get(record.response_type)})",
                route=route,
                interaction_id=record.id,
            )
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        updates_nothing = (
            response_type in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE) and record.source_message_id is None
        )
        if response_type not in ALLOWED_RESPONSES[record.type] or updates_nothing:
            detail = f"response type {response_type} is not valid for a {TYPE_NAMES[record.type]} interaction"
            if updates_nothing and record.type == MODAL_SUBMIT:
                detail += " whose modal was not opened from a message"
            self._breaches.record(rules.INVALID_RESPONSE, detail, route=route, interaction_id=record.id)
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"type": {"_errors": [{"code": "INTERACTION_RESPONSE_TYPE_INVALID", "message": detail}]}},
            )

    def acknowledge(self, record: InteractionRecord, response_type: int) -> None:
        record.response_type = response_type
        record.settled.set()
        self.publish(record)

    def check_token(self, record: InteractionRecord, route: str) -> None:
        """Raise what Discord answers to a follow-up or edit after 15 minutes or before any answer."""
        age = self._config.clock() - record.created_at
        if age > self._config.token_lifetime_s:
            self._breaches.record(
                rules.TOKEN_EXPIRED,
                f"interaction token used {age:.0f} s after the interaction, limit {self._config.token_lifetime_s:g} s",
                route=route,
                interaction_id=record.id,
            )
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if record.response_type is None:
            if not record.ack_missed:
                self._breaches.record(
                    rules.NOT_ACKNOWLEDGED,
                    "follow-up or edit before the initial response",
                    route=route,
                    interaction_id=record.id,
                )
            raise unknown("webhook")
