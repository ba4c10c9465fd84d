"""What the cogs may ask of the preferences store: a handful of async calls, nothing SQL."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from core.settings import DecodingSettings
from store.records import Part, Story
from store.resolve import ResolvedSettings


class Scope(enum.Enum):
    """Whose values, and which kind: the three sparse layers the store keeps."""

    USER = "user"
    """A user's own settings; they follow the user into every server and DMs."""
    SERVER = "server"
    """A server's defaults for its members (owner id is the server id)."""
    SERVER_LIMIT = "server limit"
    """A server's caps on `LIMIT_FIELDS` (owner id is the server id)."""


class StoryStore(Protocol):
    """Stories: who owns one, where its message is, its opening and its parts (with drafts).

    A part is saved only once it is finished, together with the move of the shown part, so a
    crash mid-part loses that part and nothing else.
    """

    async def create(
        self, owner_id: int, guild_id: int | None, channel_id: int | None, opening: str, settings: DecodingSettings
    ) -> int:
        """A new story with no part yet; its id goes into the custom ids of its buttons."""
        ...

    async def set_message(self, story_id: int, message_id: int) -> None: ...

    async def set_thread(self, story_id: int, thread_id: int) -> bool:
        """Tie a thread to the story; False when the story already has one (or is gone)."""
        ...

    async def get(self, story_id: int) -> Story | None: ...

    async def by_thread(self, thread_id: int) -> Story | None: ...

    async def add_part(
        self,
        story_id: int,
        *,
        parent_id: int | None,
        author_id: int,
        added: str,
        settings: DecodingSettings,
        seed: int,
        text: str,
        stop_reason: str,
        precision: str = "",
    ) -> Part | None:
        """Save a finished part and show it; None when the story was deleted meanwhile."""
        ...

    async def show(self, story_id: int, part_id: int) -> bool:
        """Show another draft (a part of this story); False when there is no such part."""
        ...

    async def delete(self, story_id: int) -> bool:
        """Forget a story and all its parts; False when there was none."""
        ...

    async def prune(self, retention_days: int) -> int:
        """Forget stories untouched for `retention_days` (0: keep all); returns how many went."""
        ...

    async def threads_allowed(self, guild_id: int) -> bool: ...

    async def set_threads_allowed(self, guild_id: int, allowed: bool) -> None: ...


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
