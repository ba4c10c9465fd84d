"""Replies every cog shares: private error messages that never ping anyone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import discord

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
"""Passed on every message: generated text and user input must never ping anyone."""
DEFER_AFTER_S = 1.5
"""Discord wants an answer within 3 s: work still running after this long is deferred first."""


@contextlib.asynccontextmanager
async def defer_if_slow(interaction: discord.Interaction, *, after: float = DEFER_AFTER_S) -> AsyncIterator[None]:
    """Around work that is usually quick but may not be (the preferences store, when another
    process holds its database): if it runs past `after`, the interaction is deferred privately
    (a button press: deferred as an update) so Discord's deadline is kept; `send_ephemeral`
    then answers as a follow-up. Nothing inside may answer the interaction itself.
    """
    deferring = False

    async def defer_later() -> None:
        nonlocal deferring
        await asyncio.sleep(after)
        if interaction.response.is_done():
            return
        deferring = True
        if getattr(interaction, "type", None) == discord.InteractionType.component:
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)

    timer = asyncio.create_task(defer_later())
    try:
        yield
    finally:
        if deferring:
            await asyncio.gather(timer, return_exceptions=True)  # never answer while the defer is on its way
        else:
            timer.cancel()


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
