"""A confirm/cancel pair of buttons for actions that cannot be undone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import discord

from cogs.utils.replies import NO_MENTIONS, defer_if_slow, send_error
from core.errors import TaleweaverError

ConfirmAction = Callable[[discord.Interaction], Awaitable[str]]
"""Does the work when confirmed (with the button's interaction) and returns the text to show."""


class ConfirmView(discord.ui.View):
    """Two buttons only the person who asked may press; the action runs in the button's callback.

    Running the action from the button (rather than waiting in the command) keeps no command
    handler parked for the view's lifetime. The message is edited to the outcome either way.
    """

    def __init__(self, owner_id: int, action: ConfirmAction, *, confirm_label: str, timeout: float = 60.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.action = action
        self.confirm.label = confirm_label
        self.prompt: discord.Interaction | None = None
        """The interaction whose reply carries the buttons, set by the caller to edit on timeout."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await send_error(interaction, "Only the person who asked can answer this.")
        return False

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        if self.is_finished():
            await interaction.response.defer()  # a second quick press: the first one is answering
            return
        self.stop()
        try:
            async with defer_if_slow(interaction):
                outcome = await self.action(interaction)
        except TaleweaverError as exc:
            outcome = exc.message
        if interaction.response.is_done():  # deferred while the action was slow
            await interaction.edit_original_response(content=outcome, view=None, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.edit_message(content=outcome, view=None, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        if self.is_finished():
            await interaction.response.defer()
            return
        self.stop()
        await interaction.response.edit_message(
            content="Cancelled. Nothing was changed.", view=None, allowed_mentions=NO_MENTIONS
        )

    async def on_timeout(self) -> None:
        if self.prompt is None:
            return
        try:
            await self.prompt.edit_original_response(
                content="No answer, so nothing was changed.", view=None, allowed_mentions=NO_MENTIONS
            )
        except discord.HTTPException:
            pass  # the message was dismissed; nothing left to tidy
