"""A real discord.py bot whose behaviour each test scripts, to behave or misbehave on purpose."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.webhook.async_ import async_context, interaction_response_params

Behaviour = Callable[[discord.Interaction], Awaitable[None]]

NO_MENTIONS = discord.AllowedMentions.none()


class ScriptedBot(discord.Client):
    """A `Client` with a `CommandTree`: /act runs `behaviour`, /pick autocompletes, /admin needs Manage Server.

    Errors raised in a command (Discord's error answers among them) are kept in `errors`, so a
    test can check that the bot met the error Discord would have given.
    """

    def __init__(self, **options: Any) -> None:
        """`options` go to `discord.Client` (a shard: `shard_id`, `shard_count`)."""
        super().__init__(
            intents=discord.Intents.default(), allowed_mentions=NO_MENTIONS, guild_ready_timeout=0.05, **options
        )
        self.tree = app_commands.CommandTree(self)
        self.behaviour: Behaviour = _do_nothing
        self.autocomplete_choices: list[app_commands.Choice[str]] = []
        self.errors: list[BaseException] = []
        self.error_seen = asyncio.Event()
        self._register()

    def _register(self) -> None:
        @self.tree.command(name="act", description="Do what the test scripted")
        @app_commands.describe(text="Anything")
        async def act(interaction: discord.Interaction, text: str | None = None) -> None:
            await self.behaviour(interaction)

        @self.tree.command(name="pick", description="Pick a colour")
        async def pick(interaction: discord.Interaction, colour: str, count: app_commands.Range[int, 1, 5] = 1) -> None:
            await interaction.response.send_message(f"{count} × {colour}")

        @pick.autocomplete("colour")
        async def pick_colour(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [c for c in self.autocomplete_choices if current.lower() in c.name.lower()]

        @self.tree.command(name="admin", description="Only for those who may manage the server")
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("admin done", ephemeral=True)

        @self.tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            self.errors.append(error.__cause__ or error)
            self.error_seen.set()

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_error(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Errors outside commands (in event handlers) land here; keep them too."""
        self.errors.append(sys.exc_info()[1] or RuntimeError(event))
        self.error_seen.set()


async def _do_nothing(interaction: discord.Interaction) -> None:
    """A bot that never answers."""


async def raw_initial_response(interaction: discord.Interaction, response_type: int, data: dict[str, Any]) -> None:
    """Send an initial response straight through discord.py's webhook adapter.

    discord.py refuses some mistakes before they leave the process (a second response, more than
    10 embeds, more than 5 rows); a misbehaving bot that builds its own payloads is not stopped.
    """
    adapter = async_context.get()
    await adapter.create_interaction_response(
        interaction.id,
        interaction.token,
        session=interaction._session,
        params=interaction_response_params(response_type, data),
    )
