"""Settings of the stand-in; the defaults are Discord's documented values."""

from __future__ import annotations

from dataclasses import dataclass, field

from playground.standin.clock import Clock, monotonic
from playground.standin.limits import DEFAULT_ATTACHMENT_SIZE_LIMIT


@dataclass(frozen=True)
class StandInConfig:
    """How the stand-in listens and which time and size limits it enforces."""

    host: str = "127.0.0.1"
    """Loopback only: the stand-in has no authentication worth the name."""
    port: int = 0
    """0 picks a free port; read the chosen one from `StandIn.port`."""
    ack_deadline_s: float = 3.0
    """Discord drops an interaction that has no initial response within 3 seconds."""
    token_lifetime_s: float = 15 * 60
    """An interaction token (follow-ups, edits of the original) is valid for 15 minutes."""
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT
    """Largest file in bytes; sent to the bot as the interaction's `attachment_size_limit`."""
    heartbeat_interval_ms: int = 41250
    """Gateway heartbeat interval announced in HELLO (Discord's usual value)."""
    clock: Clock = field(default=monotonic)
    """Measures the ack deadline and the token lifetime; inject `ManualClock` in tests."""
    bot_token: str | None = None
    """When set, logins with another token are refused with 401; None accepts any token."""
