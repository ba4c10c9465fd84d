"""The tree-level error handler: every slash-command error ends here.

Order of handling:
1. `TaleweaverError` (raised by the model service, the store or the settings type, possibly
   wrapped in `CommandInvokeError`): the user made a mistake or the bot is busy — its message
   is written for them, so it goes back as it is, ephemeral.
2. `CheckFailure` (e.g. missing Manage Server): a polite refusal.
3. `TransformerError` / `CommandSignatureMismatch`: an option Discord's client should have
   stopped (a modified client, or stale commands): a short explanation.
4. Anything else is a bug: logged with its traceback and the command's name; the user gets a
   short apology, never the traceback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.replies import send_error
from core.errors import TaleweaverError
from core.metrics import COMMANDS

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)
APOLOGY = "Sorry, something went wrong on my side. It has been logged; please try again."


class Refused(app_commands.CheckFailure):
    """A check that says why it refused (the bot is restarting, say): the user reads `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def on_app_command_error(interaction: discord.Interaction, error: Exception) -> None:
    """Also used by views (buttons), whose errors do not pass through the tree."""
    original = getattr(error, "original", error)
    command = getattr(interaction, "command", None)
    name = command.qualified_name if command else "button"
    bug = not isinstance(original, (TaleweaverError, app_commands.CheckFailure, app_commands.TransformerError))
    COMMANDS.labels(command=name, outcome="error" if bug else "refused").inc()
    if isinstance(original, TaleweaverError):
        await send_error(interaction, original.message)
    elif isinstance(error, Refused):
        await send_error(interaction, error.message)
    elif isinstance(error, app_commands.MissingPermissions):
        await send_error(interaction, "You need the Manage Server permission for that.")
    elif isinstance(error, app_commands.CheckFailure):
        await send_error(interaction, "You can't use that command here.")
    elif isinstance(error, app_commands.TransformerError):
        shown = discord.utils.escape_mentions(str(error.value))[:100]
        await send_error(interaction, f"That value isn't valid for this option: {shown}")
    elif isinstance(error, app_commands.CommandSignatureMismatch):
        await send_error(interaction, "This command changed since your client loaded it; please try again in a minute.")
    else:
        log.error("unexpected error in %s", f"/{name}" if command else "a button", exc_info=original)
        await send_error(interaction, APOLOGY)


class ErrorHandler(commands.Cog):
    """Installs the tree-level error handler."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error
        bot.tree.on_error = on_app_command_error

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(ErrorHandler(bot))
