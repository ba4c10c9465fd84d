"""Replies every cog shares: private error messages that never ping anyone."""

from __future__ import annotations

import logging
from typing import Any

import discord

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
"""Passed on every message: generated text and user input must never ping anyone."""


async def send_ephemeral(interaction: discord.Interaction, content: str, **kwargs: Any) -> None:
    """Answer privately, as the first response or as a follow-up if the interaction already has one.

    Deferring, streaming and buttons all leave an interaction in different states; callers should not
    have to know which one to reach the user.
    """
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=True, allowed_mentions=NO_MENTIONS, **kwargs)
    else:
        await interaction.response.send_message(content, ephemeral=True, allowed_mentions=NO_MENTIONS, **kwargs)


async def send_error(interaction: discord.Interaction, message: str) -> None:
    """Tell the user what went wrong, privately (a mistake should not stay in the channel)."""
    await send_ephemeral(interaction, message)


async def withdraw(interaction: discord.Interaction, message: str) -> None:
    """After a public defer, a user's mistake should not stay in the channel: remove the
    "thinking…" message and tell the user privately."""
    try:
        await interaction.delete_original_response()
    except discord.HTTPException:
        log.debug("could not delete the deferred response", exc_info=True)
    await send_error(interaction, message)
