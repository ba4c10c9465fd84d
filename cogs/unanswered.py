"""Presses nothing in the bot answers: a button of an older version of the bot, of a view whose time
ran out, or of another feature. Discord shows "This interaction failed" unless something answers
within 3 s, so each gets a short private note; an old story button's owner also sees the dead
buttons taken away."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from cogs.utils.dispatch import KINDS, handled
from cogs.utils.replies import NO_MENTIONS, send_error

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

UNKNOWN_PRESS = (
    "This button no longer does anything: it comes from an older version of me, or its time ran out. "
    "Nothing was done; `/help` lists what I can do."
)
LEGACY_STORY_BUTTON = re.compile(r"story:[a-z]+:[^:]*:(?P<owner>[0-9]+):[^:]*")
"""Story buttons from before stories were kept: `story:<action>:<boot>:<owner>:<nonce>`."""
LEGACY_STORY = (
    "This story was written before stories were kept, so its buttons no longer work. Start a new one with `/story`."
)


class Unanswered(commands.Cog):
    """Answers the presses no view of the bot will."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type not in KINDS or handled(interaction):
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        log.info("answered a press nothing handles (custom id %r)", custom_id[:100])
        legacy = LEGACY_STORY_BUTTON.fullmatch(custom_id)
        if legacy is None:
            await send_error(interaction, UNKNOWN_PRESS)
            return
        if legacy["owner"] == str(interaction.user.id):
            await interaction.response.edit_message(view=None, allowed_mentions=NO_MENTIONS)
        await send_error(interaction, LEGACY_STORY)


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(Unanswered(bot))
