"""A recording stand-in for `discord.Interaction`, for unit tests of the cogs.

Only the Discord side is faked; the model service, the store and the cogs are the real ones.
Every call is recorded with its time so tests can check order (defer first), pacing (edits
throttled) and payloads (limits, `AllowedMentions.none()`). The end-to-end tests use the real
bot against the Discord API stand-in instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import discord


@dataclass
class Call:
    name: str
    kwargs: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class InteractionAlreadyResponded(Exception):
    """Raised like discord.InteractionResponded when a second initial response is attempted."""


@dataclass
class FakeUser:
    id: int
    name: str = "tester"

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


class FakeResponse:
    def __init__(self, interaction: FakeInteraction) -> None:
        self._interaction = interaction
        self._done = False

    def is_done(self) -> bool:
        return self._done

    def _respond(self, name: str, kwargs: dict[str, Any]) -> None:
        if self._done:
            raise InteractionAlreadyResponded(name)
        self._done = True
        self._interaction.calls.append(Call(name, kwargs))

    async def defer(self, **kwargs: Any) -> None:
        self._respond("defer", kwargs)

    async def send_message(self, content: str | None = None, **kwargs: Any) -> None:
        self._respond("send_message", {"content": content, **kwargs})

    async def edit_message(self, **kwargs: Any) -> None:
        self._respond("edit_message", kwargs)

    async def send_modal(self, modal: discord.ui.Modal) -> None:
        self._respond("send_modal", {"modal": modal})


class FakeFollowup:
    def __init__(self, interaction: FakeInteraction) -> None:
        self._interaction = interaction

    async def send(self, content: str | None = None, **kwargs: Any) -> FakeMessage:
        self._interaction.calls.append(Call("followup", {"content": content, **kwargs}))
        return FakeMessage(self._interaction, content, kwargs)


class FakeMessage:
    def __init__(
        self, interaction: FakeInteraction, content: str | None, kwargs: dict[str, Any], message_id: int | None = None
    ) -> None:
        self._interaction = interaction
        self.content = content
        self.kwargs = kwargs
        self.id = message_id if message_id is not None else len(interaction.calls)

    async def edit(self, **kwargs: Any) -> FakeMessage:
        self._interaction.calls.append(Call("message_edit", kwargs))
        return self


class FakeInteraction:
    """Just enough of `discord.Interaction` for the cogs, recording every response."""

    def __init__(
        self,
        user_id: int = 1001,
        guild_id: int | None = 555,
        *,
        manage_guild: bool = False,
        message: Any = None,
        client: Any = None,
        type: discord.InteractionType = discord.InteractionType.application_command,
        channel_id: int | None = 777,
    ) -> None:
        self.user = FakeUser(user_id)
        self.guild_id = guild_id
        self.guild = discord.Object(id=guild_id) if guild_id is not None else None
        self.permissions = discord.Permissions(manage_guild=manage_guild)
        self.calls: list[Call] = []
        self.response = FakeResponse(self)
        self.followup = FakeFollowup(self)
        self.message = message
        self.client = client
        self.type = type
        self.channel_id = channel_id
        self.channel = None
        self.id = 42
        self.created_at = time.monotonic()
        self.extras: dict[str, Any] = {}

    async def edit_original_response(self, **kwargs: Any) -> FakeMessage:
        if not self.response.is_done():
            raise AssertionError("edit_original_response before any initial response")
        self.calls.append(Call("edit_original", kwargs))
        return FakeMessage(self, kwargs.get("content"), kwargs, message_id=9000 + self.id)

    async def delete_original_response(self) -> None:
        self.calls.append(Call("delete_original", {}))

    async def original_response(self) -> FakeMessage:
        return FakeMessage(self, None, {})

    # Helpers for assertions
    def named(self, *names: str) -> list[Call]:
        return [c for c in self.calls if c.name in names]

    def sent_payloads(self) -> list[dict[str, Any]]:
        """Every call that puts a message on Discord (not defers)."""
        return [c.kwargs for c in self.calls if c.name not in ("defer", "send_modal", "delete_original")]

    def last_text(self) -> str:
        for call in reversed(self.calls):
            if call.kwargs.get("content") is not None:
                return call.kwargs["content"]
        return ""
