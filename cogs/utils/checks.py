"""Checks the bot and every cog share: a refusal that says why (the bot is restarting, say)."""

from __future__ import annotations

from discord import app_commands

RESTARTING = "I'm restarting right now; please try again in a minute."
"""What a command or button gets while the bot shuts down."""


class Refused(app_commands.CheckFailure):
    """A check that says why it refused: the user reads `message` (cogs/errors.py sends it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
