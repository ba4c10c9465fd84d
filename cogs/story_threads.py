"""Story threads and `/tale`: a thread on a story message where anyone may add a line, and the
commands that manage stories (delete one, allow or forbid threads in a server).

A thread carries one story (the database ties the two); `/tale add` there writes the next part
from the shown end of the story plus the line, with the story's own settings.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.story import PartPlan, StoryCog
from cogs.story_view import STORY_ID_MAX, StoryState
from cogs.utils.formats import clean_text, truncate
from cogs.utils.replies import NO_MENTIONS, send_ephemeral, send_error
from core.errors import TaleweaverError
from core.prompts import PromptKind, check_text
from store import StoreUnavailableError

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

THREAD_NAME_LIMIT = 100
"""Discord refuses a thread name over 100 characters."""
THREAD_TYPES = (discord.ChannelType.public_thread, discord.ChannelType.private_thread, discord.ChannelType.news_thread)
NEEDED = "I need the **Create Public Threads** and **Send Messages in Threads** permissions in this channel to open a story thread. Ask a moderator to grant them; nothing was changed."  # noqa: E501
WELCOME = (
    "🧵 This thread carries story #{id}. Anyone here can add a line with `/tale add`, and I write on from it. "
    "The story's Details button lists every part's settings and seed."
)


def thread_name(opening: str) -> str:
    """A thread name from the opening: one line, at most 100 characters, never empty."""
    line = " ".join(clean_text(opening).split()) or "A story"
    return truncate(f"📖 {line}", THREAD_NAME_LIMIT)


class StoryThreads(commands.Cog):
    """Threads on stories, and `/tale`."""

    tale = app_commands.Group(name="tale", description="Stories you keep: add to one in its thread, delete one.")

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot

    @property
    def story_cog(self) -> StoryCog:
        return self.bot.get_cog("StoryCog")  # type: ignore[return-value]

    async def open_thread(
        self, interaction: discord.Interaction, story_id: int, message: discord.Message | None
    ) -> None:
        """Open the story's thread, or say privately why not (permissions, server setting, already one)."""
        stories = self.bot.preferences.stories
        try:
            story = await stories.get(story_id)
            allowed = interaction.guild_id is not None and await stories.threads_allowed(interaction.guild_id)
        except StoreUnavailableError as exc:
            await send_ephemeral(interaction, exc.message)
            return
        problem = None
        if story is None:
            problem = f"Story #{story_id} no longer exists."
        elif interaction.guild_id is None or message is None:
            problem = "Story threads need a server channel."
        elif interaction.channel is not None and interaction.channel.type in THREAD_TYPES:
            problem = "This story is already in a thread; a thread cannot have threads of its own."
        elif not allowed:
            problem = "This server does not allow story threads (a moderator can allow them with `/tale threads`)."
        elif story.thread_id is not None:
            problem = f"This story already has its thread: <#{story.thread_id}>."
        elif not _bot_may_thread(interaction):
            problem = NEEDED
        if problem is not None:
            await send_ephemeral(interaction, problem)
            return
        assert story is not None and message is not None
        try:
            thread = await message.create_thread(name=thread_name(story.opening), auto_archive_duration=1440)
        except discord.Forbidden:
            await send_ephemeral(interaction, NEEDED)
            return
        except discord.HTTPException as exc:
            await send_ephemeral(interaction, f"Discord would not open the thread ({exc.status}); nothing was changed.")
            return
        if not await stories.set_thread(story.id, thread.id):
            await send_ephemeral(interaction, "This story got a thread meanwhile.")
            return
        try:
            await thread.send(WELCOME.format(id=story.id), allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.info("could not greet story thread %s", thread.id, exc_info=True)
        await send_ephemeral(
            interaction, f"Opened the thread <#{thread.id}>: anyone there can add a line with `/tale add`."
        )

    @tale.command(name="add", description="In a story's thread: add a line, and the story goes on from it.")
    @app_commands.describe(line="Your line; the model continues the story from it.")
    async def add(self, interaction: discord.Interaction, line: app_commands.Range[str, 1, 500]) -> None:
        try:
            check_text(line, PromptKind.STORY)
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        cog = self.story_cog
        try:
            story = await self.bot.preferences.stories.by_thread(interaction.channel_id or 0)
        except StoreUnavailableError as exc:
            await send_error(interaction, exc.message)
            return
        if story is None:
            await send_error(interaction, "This is not a story thread: open one with the Thread button under a story.")
            return
        if story.id in cog._writing:
            await send_error(interaction, "The story is being written right now; add your line when it is done.")
            return
        await interaction.response.defer(thinking=True)
        text = story.text
        added = ("" if not text or text[-1].isspace() else " ") + line.strip()
        shown = story.shown
        plan = PartPlan(
            shown.id if shown else None, text, added, story.settings, cog._seed(story.settings), interaction.user.id
        )
        state = StoryState(
            owner_id=interaction.user.id,
            guild_id=story.guild_id,
            opening=added.strip(),
            settings=story.settings,
            text=added.strip(),
            notes=(f"Story #{story.id}: the line is {interaction.user.display_name}'s.",),
            story_id=story.id,
            with_buttons=False,
        )
        await cog.write(interaction, state, plan, first=True)

    @tale.command(name="delete", description="Delete a story's record (yours, or any here with Manage Messages).")
    @app_commands.describe(story="The story's number (in its footer).")
    async def delete(self, interaction: discord.Interaction, story: app_commands.Range[int, 1]) -> None:
        stories = self.bot.preferences.stories
        try:
            found = await stories.get(story) if story <= STORY_ID_MAX else None
            may = found is not None and (
                found.owner_id == interaction.user.id
                or (found.guild_id == interaction.guild_id and interaction.permissions.manage_messages)
            )
            if not may:
                await send_error(interaction, f"There is no story #{story} you may delete here. Nothing was changed.")
                return
            await stories.delete(story)
        except StoreUnavailableError as exc:
            await send_error(interaction, exc.message)
            return
        await send_ephemeral(
            interaction,
            f"Story #{story}'s record is deleted; its buttons now only say so. The message stays in Discord.",
        )

    @tale.command(name="threads", description="Allow or forbid story threads in this server.")
    @app_commands.describe(allowed="Whether the Thread button (and /story thread) may open threads here.")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def threads(self, interaction: discord.Interaction, allowed: bool) -> None:
        if interaction.guild_id is None:
            await send_error(interaction, "Story threads are a server's setting: use this in a server.")
            return
        try:
            await self.bot.preferences.stories.set_threads_allowed(interaction.guild_id, allowed)
        except StoreUnavailableError as exc:
            await send_error(interaction, exc.message)
            return
        word = "allowed" if allowed else "forbidden"
        await send_ephemeral(interaction, f"Story threads are now {word} in this server.")


def _bot_may_thread(interaction: discord.Interaction) -> bool:
    permissions = getattr(interaction, "app_permissions", None)
    return bool(permissions and permissions.create_public_threads and permissions.send_messages_in_threads)


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(StoryThreads(bot))
