"""What the cogs may ask of the preferences store: a handful of async calls, nothing SQL."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from store.resolve import ResolvedSettings
from store.stories import StoryStore


class Scope(enum.Enum):
    """Whose values, and which kind: the three sparse layers the store keeps."""

    USER = "user"
    """A user's own settings; they follow the user into every server and DMs."""
    SERVER = "server"
    """A server's defaults for its members (owner id is the server id)."""
    SERVER_LIMIT = "server limit"
    """A server's caps on `LIMIT_FIELDS` (owner id is the server id)."""


class PreferencesStore(Protocol):
    """Per-user and per-server decoding preferences.

    Every write validates all its values first (raising `SettingsError` and saving nothing) and is
    committed before the call returns, so an acknowledged change survives a crash. Failures of
    the storage itself raise `StoreUnavailableError` with a message for the user.
    """

    async def resolve(self, user_id: int, guild_id: int | None, overrides: Mapping[str, Any] = ...) -> ResolvedSettings:
        """The settings a request of this user in this server (None: DMs) uses, `overrides` on top.

        `overrides` are the command's own options, only those given (`seed: None` means a random
        seed for this command); a bad one raises `SettingsError` naming it.
        """
        ...

    async def resolve_server(self, guild_id: int) -> ResolvedSettings:
        """What a member of this server gets before any settings of their own."""
        ...

    async def get(self, scope: Scope, owner_id: int) -> dict[str, Any]:
        """The values chosen in one layer (only those set), valid under today's ranges."""
        ...

    async def set(self, scope: Scope, owner_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and save some values atomically; returns them as saved (typed)."""
        ...

    async def reset(self, scope: Scope, owner_id: int, fields: Collection[str] | None = None) -> tuple[str, ...]:
        """Forget some values (None: all) of one layer; returns the fields that had a value."""
        ...

    stories: StoryStore
    """The stories kept in the same database."""

    async def ping(self) -> bool:
        """Whether the database answers (the operations endpoint's readiness check)."""
        ...

    async def close(self) -> None: ...
