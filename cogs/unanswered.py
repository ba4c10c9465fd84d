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


def has_handler(interaction: discord.Interaction) -> bool:
    """Whether discord.py hands this press (or form) to one of the bot's views, dynamic items or modals.

    discord.py has no public way to ask, so this makes the lookups its `ViewStore.dispatch_view`
    and `dispatch_modal` make, on the same store.
    """
    store = interaction.client._connection._view_store  # type: ignore[attr-defined]
    data = interaction.data or {}
    custom_id = str(data.get("custom_id", ""))
    if interaction.type == discord.InteractionType.modal_submit:
        return custom_id in store._modals
    if interaction.message is not None and any(pattern.fullmatch(custom_id) for pattern in store._dynamic_items):
        return True
    key = (int(data.get("component_type", 0)), custom_id)
    message_id = interaction.message.id if interaction.message is not None else None
    return key in store._views.get(message_id, {}) or key in store._views.get(None, {})


class Unanswered(commands.Cog):
    """Answers the presses no view of the bot will."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        kinds = (discord.InteractionType.component, discord.InteractionType.modal_submit)
        if interaction.type not in kinds or has_handler(interaction):
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
