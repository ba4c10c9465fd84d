"""`/story`: write a story from an opening line, streamed into the reply, kept in the database.

A story is saved part by part (store/stories.py): a part is written to the database only once it
is finished, so a restart mid-part loses that part alone. Its buttons (cogs/story_view.py) carry
the story id, so they keep working after a restart. Threads and `/tale` live in cogs/story_threads.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs.errors import on_app_command_error
from cogs.story_view import (  # noqa: F401
    STORY_ID_MAX,
    StoryButton,
    StoryState,
    precision_note,
    recipe_embed,
    render_story,
    story_view,
)
from cogs.utils.checks import RESTARTING
from cogs.utils.options import narrow_option, prompt_chars, prompt_help
from cogs.utils.replies import NO_MENTIONS, send_error, withdraw
from cogs.utils.throttle import EditThrottle
from cogs.why import answer_why
from core.errors import RequestTimeoutError, TaleweaverError
from core.prompts import PromptKind, check_text
from core.service import StopReason, StoryRequest, StoryResult, WhyRequest
from core.settings import FIELDS, SEED_MAX, STRATEGIES, DecodingSettings
from store import ResolvedSettings, Scope, StoreUnavailableError, Story, StoryStore, resolve_settings

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

PERSONAL_UNAVAILABLE = "Your personal settings are unavailable right now, so this story uses the defaults."
UNSAVED = "This story could not be saved (the database is unavailable), so it has no buttons."
GONE = "This story's record was deleted (by its owner, a moderator, or after the retention period), so its buttons no longer work. Start a new one with `/story`."  # noqa: E501
NOT_OWNER = (
    "Only the person who asked for this story can use its buttons (anyone may press Why? and Details). "
    "Start your own with `/story`!"
)
DELETE_REFUSED = (
    "Only the story's owner, or members with the Manage Messages permission, may delete it. Nothing was changed."
)
BUSY = "This story is being written right now; wait for it to finish (or press Stop)."
CUT_BY_RESTART = "⚠️ The bot is restarting: this part was not kept. Press Continue or Regenerate in a minute."
SHUTDOWN_GRACE_S = 8.0
PRUNE_EVERY_S = 60 * 60
STOP_STATUS = {StopReason.STOPPED: "⏹️ stopped", StopReason.EOS: "the end", StopReason.LENGTH: ""}
_LEN, _TEMP = FIELDS["max_new_tokens"], FIELDS["temperature"]
PROMPT_HELP = "The opening line of the story."
ANYONE = {"why", "details"}
"""Buttons anyone may press; the others are the owner's (Delete: also Manage Messages)."""


@dataclass(frozen=True)
class PartPlan:
    """One part to write: what it continues, what is added before it, and how."""

    parent_id: int | None
    base: str
    added: str
    settings: DecodingSettings
    seed: int
    author_id: int
    precision: str = ""
    """A replayed part's recorded precision: another one in force now is said."""


class StoryCog(commands.Cog):
    """Story writing."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot
        self.restarting = False
        self._writing: dict[int, tuple[StoryState, asyncio.Task]] = {}
        """Stories being written now, by a key (the story id), so Stop and a shutdown can end them."""
        self._unsaved_keys = iter(range(-1, -(2**62), -1))
        self._pruner: asyncio.Task | None = None
        config, cap = bot.config, bot.config.limits.max_new_tokens
        narrow_option(
            self.story, "prompt", max_value=prompt_chars(config), description=prompt_help(config, PROMPT_HELP)
        )
        narrow_option(
            self.story,
            "length",
            max_value=cap,
            description=f"How many tokens to write (1-{cap}); default: your setting.",
        )

    @property
    def stories(self) -> StoryStore:
        return self.bot.preferences.stories

    async def cog_load(self) -> None:
        self._pruner = asyncio.create_task(self._prune_forever(), name="story-retention")

    async def cog_unload(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()

    async def _prune_forever(self) -> None:
        """Retention: stories untouched for `database.story_retention_days` are forgotten, hourly."""
        days = self.bot.config.database.story_retention_days
        while days:
            try:
                pruned = await self.stories.prune(days)
                if pruned:
                    log.info("retention: forgot %d stories untouched for %d days", pruned, days)
            except StoreUnavailableError as exc:
                log.warning("retention could not prune stories: %s", exc.message)
            await asyncio.sleep(PRUNE_EVERY_S)

    @app_commands.command(name="story", description="Write a story that starts with your opening line.")
    @app_commands.describe(
        prompt=PROMPT_HELP,
        length=f"How many tokens to write ({_LEN.minimum}-{_LEN.maximum}); default: your setting.",
        strategy="How words are chosen, for this story only; default: your setting.",
        temperature=f"Sampling temperature ({_TEMP.minimum}-{_TEMP.maximum}), for this story only.",
        seed="A seed to reproduce a story (sampling only).",
        replay="A story's number (see its Details): write it again from its recipe, word for word.",
        thread="Open a thread on the story, where anyone may add a line with /tale add.",
    )
    @app_commands.choices(strategy=[app_commands.Choice(name=name, value=name) for name in STRATEGIES])
    async def story(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 2000] | None = None,
        length: app_commands.Range[int, _LEN.minimum, _LEN.maximum] | None = None,
        strategy: str | None = None,
        temperature: app_commands.Range[float, _TEMP.minimum, _TEMP.maximum] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        replay: app_commands.Range[int, 1] | None = None,
        thread: bool = False,
    ) -> None:
        if replay is not None:
            await self._replay(interaction, replay, prompt is not None or length or strategy or temperature or seed)
            return
        if prompt is None:
            await send_error(interaction, "Give the story an opening line (`prompt`), or a story number to `replay`.")
            return
        try:
            check_text(prompt, PromptKind.STORY)
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        overrides = {
            name: value
            for name, value in (
                ("max_new_tokens", length),
                ("strategy", strategy),
                ("temperature", temperature),
                ("seed", seed),
            )
            if value is not None
        }
        await interaction.response.defer(thinking=True)
        try:
            resolved = await self._resolve(interaction, overrides)
        except TaleweaverError as exc:
            await withdraw(interaction, exc.message)
            return
        state = StoryState(
            owner_id=interaction.user.id,
            guild_id=interaction.guild_id,
            opening=prompt,
            settings=resolved.settings,
            notes=tuple(resolved.notes),
            text=prompt,
        )
        plan = PartPlan(None, prompt, "", state.settings, self._seed(state.settings), interaction.user.id)
        saved = await self.write(interaction, state, plan, first=True, new_story=True)
        if thread and saved and state.story_id is not None:
            threads = self.bot.get_cog("StoryThreads")
            if threads is not None:
                await threads.open_thread(interaction, state.story_id, await interaction.original_response())

    async def _create(self, interaction: discord.Interaction, state: StoryState) -> int | None:
        try:
            return await self.stories.create(
                state.owner_id, state.guild_id, interaction.channel_id, state.opening, state.settings
            )
        except StoreUnavailableError as exc:
            log.warning("a story could not be saved: %s", exc.message)
            state.notes = (*state.notes, UNSAVED)
            return None

    async def _replay(self, interaction: discord.Interaction, story_id: int, other_options: Any) -> None:
        """Write a kept story again, part by part with each part's settings and seed: the same text."""
        if other_options:
            await send_error(interaction, "`replay` takes no other option: the recipe says how each part was written.")
            return
        story = await self._load(interaction, story_id)
        if story is None:
            return
        if story.owner_id != interaction.user.id and (story.guild_id is None or story.guild_id != interaction.guild_id):
            await send_error(interaction, f"There is no story #{story_id} you can replay here.")
            return
        if not story.chain:
            await send_error(interaction, f"Story #{story_id} has no finished part to replay yet.")
            return
        await interaction.response.defer(thinking=True)
        state = StoryState(
            owner_id=interaction.user.id,
            guild_id=interaction.guild_id,
            opening=story.opening,
            settings=story.settings,
            notes=(f"A replay of story #{story.id}.",),
            text=story.opening,
        )
        parent: int | None = None
        text = story.opening
        for number, part in enumerate(story.chain):
            plan = PartPlan(parent, text, part.added, part.settings, part.seed, interaction.user.id, part.precision)
            saved = await self.write(interaction, state, plan, first=number == 0, new_story=number == 0)
            if not saved:
                return
            text = state.text
            parent = saved.shown.id if saved.shown is not None else None

    async def _resolve(self, interaction: discord.Interaction, overrides: dict[str, Any]) -> ResolvedSettings:
        """The user's settings; when the store cannot give them (damaged, busy), the server's and
        the bot's defaults as far as they can be read, with a note: a story does not depend on it."""
        store = self.bot.preferences
        try:
            return await store.resolve(interaction.user.id, interaction.guild_id, overrides)
        except StoreUnavailableError as exc:
            log.warning("writing a story on default settings: %s", exc.message)
        server: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        if interaction.guild_id is not None:
            try:
                server = await store.get(Scope.SERVER, interaction.guild_id)
                limits = await store.get(Scope.SERVER_LIMIT, interaction.guild_id)
            except StoreUnavailableError:
                server, limits = {}, {}
        config = self.bot.config
        resolved = resolve_settings(
            config_defaults=config.defaults,
            max_new_tokens_cap=config.limits.max_new_tokens,
            server=server,
            command=overrides,
            server_limits=limits,
        )
        return dataclasses.replace(resolved, notes=(PERSONAL_UNAVAILABLE, *resolved.notes))

    @staticmethod
    def _seed(settings: DecodingSettings, fresh: bool = False) -> int:
        """The settings' own seed unless there is none or a new draft is asked for (Regenerate),
        which would otherwise repeat itself word for word."""
        return settings.seed if settings.seed is not None and not fresh else random.randrange(SEED_MAX)

    # Buttons ---------------------------------------------------------------------------------

    async def on_button(self, interaction: discord.Interaction, action: str, story_id: int) -> None:
        """Every story button lands here, with the story loaded fresh from the database."""
        try:
            await self._on_button(interaction, action, story_id)
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
        except Exception as exc:  # a bug: logged, and the user gets an apology
            await on_app_command_error(interaction, exc)

    async def _on_button(self, interaction: discord.Interaction, action: str, story_id: int) -> None:
        if self.restarting or getattr(self.bot, "shutting_down", False):
            await send_error(interaction, RESTARTING)
            return
        if action == "stop":
            await self._stop(interaction, story_id)
            return
        story = await self._load(interaction, story_id)
        if story is None:
            return
        if action not in ANYONE and interaction.user.id != story.owner_id:
            if action != "delete" or not _manages_messages(interaction):
                await send_error(interaction, DELETE_REFUSED if action == "delete" else NOT_OWNER)
                return
        if action == "why":
            await interaction.response.defer(ephemeral=True, thinking=True)
            request = WhyRequest(user_id=interaction.user.id, prompt=story.text, keep_tail=True)
            await answer_why(self.bot, interaction, request)
        elif action == "details":
            await interaction.response.send_message(
                embed=recipe_embed(story), ephemeral=True, allowed_mentions=NO_MENTIONS
            )
        elif action == "delete":
            await self.stories.delete(story.id)
            await interaction.response.edit_message(view=None, allowed_mentions=NO_MENTIONS)
            await send_error(
                interaction,
                f"Story #{story.id}'s record (opening, parts, seeds) is deleted. The message stays; "
                "delete it in Discord if you want it gone too.",
            )
        elif action == "thread":
            threads = self.bot.get_cog("StoryThreads")
            await interaction.response.defer(ephemeral=True, thinking=True)
            if threads is not None:
                await threads.open_thread(interaction, story.id, interaction.message)
        elif action in ("prev", "next"):
            await self._move(interaction, story, -1 if action == "prev" else 1)
        elif story.id in self._writing:
            await send_error(interaction, BUSY)
        else:
            await interaction.response.defer()
            await self.write(interaction, self._state_of(story), self._plan(interaction, story, action))

    def _plan(self, interaction: discord.Interaction, story: Story, action: str) -> PartPlan:
        shown = story.shown
        if action == "regenerate" and shown is not None:  # a new draft of the last part
            settings = story.settings
            return PartPlan(
                shown.parent_id,
                story.text_before_shown(),
                shown.added,
                settings,
                self._seed(settings, True),
                shown.author_id,
            )
        if action == "regenerate":  # the first part was lost (a restart): write it again
            return PartPlan(None, story.opening, "", story.settings, self._seed(story.settings, True), story.owner_id)
        return PartPlan(
            shown.id if shown else None, story.text, "", story.settings, self._seed(story.settings), interaction.user.id
        )

    async def _load(self, interaction: discord.Interaction, story_id: int) -> Story | None:
        """The story, or None after answering: gone (its buttons are taken away) or the database failing."""
        try:
            story = await self.stories.get(story_id) if story_id <= STORY_ID_MAX else None
        except StoreUnavailableError as exc:
            await send_error(interaction, exc.message)
            return None
        if story is None:
            if interaction.type == discord.InteractionType.component and not interaction.response.is_done():
                await interaction.response.edit_message(view=None, allowed_mentions=NO_MENTIONS)
            await send_error(
                interaction, GONE if interaction.type == discord.InteractionType.component else _no(story_id)
            )
        return story

    async def _stop(self, interaction: discord.Interaction, story_id: int) -> None:
        running = self._writing.get(story_id)
        if running is not None:
            state = running[0]
            if interaction.user.id != state.owner_id:
                await send_error(interaction, NOT_OWNER)
                return
            await interaction.response.defer()
            if state.stream is not None:
                state.stream.stop()
            return
        # Nothing runs: a message left "writing" by a crash. Show the story as it was kept.
        story = await self._load(interaction, story_id)
        if story is None:
            return
        await interaction.response.defer()
        await self._edit(interaction, self._state_of(story), running=False, status="")

    async def _move(self, interaction: discord.Interaction, story: Story, step: int) -> None:
        index = story.draft_index + step
        if not 0 <= index < len(story.drafts) or story.id in self._writing:
            await send_error(
                interaction, "There is no other draft that way." if story.id not in self._writing else BUSY
            )
            return
        await interaction.response.defer()
        await self.stories.show(story.id, story.drafts[index])
        moved = await self.stories.get(story.id)
        if moved is None:
            return
        await self._edit(interaction, self._state_of(moved), running=False, status="")

    def _state_of(self, story: Story) -> StoryState:
        shown = story.shown
        return StoryState(
            owner_id=story.owner_id,
            guild_id=story.guild_id,
            opening=story.opening,
            settings=shown.settings if shown else story.settings,
            text=story.text,
            seeds=[shown.seed] if shown else [],
            story_id=story.id,
            draft=(story.draft_index + 1, len(story.drafts)),
            thread_id=story.thread_id,
        )

    # Writing ---------------------------------------------------------------------------------

    async def write(
        self,
        interaction: discord.Interaction,
        state: StoryState,
        plan: PartPlan,
        *,
        first: bool = False,
        new_story: bool = False,
    ) -> Story | None:
        """Write one part into the story message, editing it as text arrives; save it once finished.

        A `new_story` gets its record (and number) only once the model service has accepted the
        part, and loses it again if the part ends before any text: a refusal changes nothing.
        Returns the story as saved, or None when nothing was kept (refused, failed, unsaved story).
        """
        if self.restarting:
            await (withdraw(interaction, RESTARTING) if first else send_error(interaction, RESTARTING))
            return None
        settings = plan.settings.replace(seed=plan.seed)
        prompt = plan.base + plan.added
        keep_tail = plan.parent_id is not None or bool(plan.added)  # a long story keeps its last tokens
        request = StoryRequest(
            user_id=plan.author_id, prompt=prompt, settings=settings, seed=plan.seed, keep_tail=keep_tail
        )
        try:
            stream = await self.bot.service.story(request)
        except TaleweaverError as exc:
            await (withdraw(interaction, exc.message) if first else send_error(interaction, exc.message))
            return None
        if new_story:
            state.story_id = await self._create(interaction, state)
        key = state.story_id if state.story_id is not None else next(self._unsaved_keys)
        shown_before = prompt if state.with_buttons else state.text
        state.text, state.settings, state.stream = shown_before, settings, stream
        state.seeds.append(plan.seed)
        self._writing[key] = (state, asyncio.current_task())
        throttle = EditThrottle(self.bot.config.discord.edit_interval_s)
        status = f"⏳ waiting: number {stream.queue_position} in the queue" if stream.queue_position else "✍️ writing…"
        await self._edit(interaction, state, running=True, status=status)
        result: StoryResult | None = None
        error: TaleweaverError | None = None
        continuation = ""
        try:
            async for delta in stream:
                continuation += delta
                state.text = shown_before + continuation
                if throttle.ready():
                    await self._edit(interaction, state, running=True, status="✍️ writing…")
            result = await stream.result()
        except TaleweaverError as exc:
            error = exc
        finally:
            state.stream = None
            self._writing.pop(key, None)
        if self.restarting:
            return await self._cut_by_restart(interaction, state)
        if result is not None and plan.precision and result.precision and result.precision != plan.precision:
            state.notes = (*state.notes, precision_note(plan.precision, result.precision))
        saved = await self._save(state, plan, continuation, result)
        if new_story and saved is None and not continuation:
            await self._forget_empty(state)
        if saved is not None and state.with_buttons:
            shown_state = self._state_of(saved)
            shown_state.notes, shown_state.message_saved = state.notes, state.message_saved
            state = shown_state
        elif error is not None and not isinstance(error, RequestTimeoutError):
            state.text = shown_before
        status = STOP_STATUS.get(result.stop_reason, "") if result else f"⚠️ {error.message}"
        await self._edit(interaction, state, running=False, status=status, result=result)
        return saved

    async def _save(
        self, state: StoryState, plan: PartPlan, continuation: str, result: StoryResult | None
    ) -> Story | None:
        """Keep a finished part (one transaction). A stopped part keeps the length it reached, so its recipe
        writes exactly it again; a failed one, or one stopped before its first token, is not kept."""
        if state.story_id is None or result is None:
            return None
        if result.new_tokens == 0 and result.stop_reason == StopReason.STOPPED:
            return None  # stopped before a word: nothing to keep, and no length reproduces it
        settings = state.settings
        if result.stop_reason == StopReason.STOPPED:
            settings = settings.replace(max_new_tokens=result.new_tokens)
        try:
            part = await self.stories.add_part(
                state.story_id,
                parent_id=plan.parent_id,
                author_id=plan.author_id,
                added=plan.added,
                settings=settings,
                seed=plan.seed,
                text=continuation,
                stop_reason=str(result.stop_reason),
                precision=result.precision,
            )
            if part is None:  # deleted while it was being written
                state.story_id = None
                state.notes = (*state.notes, "This story's record was deleted while it was being written.")
                return None
            return await self.stories.get(state.story_id)
        except StoreUnavailableError as exc:
            log.warning("a finished part could not be saved: %s", exc.message)
            state.notes = (*state.notes, f"This part could not be saved: {exc.message}")
            return None

    async def _forget_empty(self, state: StoryState) -> None:
        """A new story whose first part ended before any text keeps no record (and so no buttons)."""
        if state.story_id is None:
            return
        try:
            await self.stories.delete(state.story_id)
        except StoreUnavailableError as exc:
            log.warning("an empty story could not be forgotten: %s", exc.message)
        state.story_id = None

    async def _cut_by_restart(self, interaction: discord.Interaction, state: StoryState) -> None:
        """The part is lost; the story shows what was kept, and its buttons work again after the restart."""
        story = None
        if state.story_id is not None and state.with_buttons:
            try:
                story = await self.stories.get(state.story_id)
            except StoreUnavailableError:
                story = None
        shown = self._state_of(story) if story is not None else state
        if story is None:
            shown.with_buttons = False
        await self._edit(interaction, shown, running=False, status=CUT_BY_RESTART)
        return None

    async def shutdown(self) -> None:
        """The bot is going down: stop every story being written, and wait while each tells its user."""
        self.restarting = True
        writes = list(self._writing.values())
        for state, _ in writes:
            if state.stream is not None:
                state.stream.stop()
        if writes:
            log.info("shutting down: ending %d stories being written", len(writes))
            await asyncio.wait([task for _, task in writes], timeout=SHUTDOWN_GRACE_S)

    async def _edit(
        self,
        interaction: discord.Interaction,
        state: StoryState,
        *,
        running: bool,
        status: str,
        result: StoryResult | None = None,
    ) -> None:
        embed, attachment = render_story(state, running=running, status=status, result=result)
        kwargs: dict[str, Any] = {"content": None, "embed": embed, "allowed_mentions": NO_MENTIONS}
        kwargs["view"] = story_view(state, running=running)
        kwargs["attachments"] = [attachment] if attachment is not None else []
        try:
            message = await interaction.edit_original_response(**kwargs)
        except discord.NotFound:
            # The story message was deleted in Discord: the part is stopped (no one sees it) and
            # kept as far as it got, so the record, its recipe and its thread stay whole.
            log.info("a story message was deleted; stopping its part, the record stays")
            if state.stream is not None:
                state.stream.stop()
            return
        message_id = getattr(message, "id", None)
        if (
            state.story_id is not None
            and state.with_buttons
            and interaction.type == discord.InteractionType.application_command
        ):
            if isinstance(message_id, int) and not state.message_saved:
                try:
                    await self.stories.set_message(state.story_id, message_id)
                    state.message_saved = True
                except StoreUnavailableError:
                    log.debug("could not save a story's message id", exc_info=True)


def _manages_messages(interaction: discord.Interaction) -> bool:
    permissions = getattr(interaction, "permissions", None)
    return bool(permissions and permissions.manage_messages)


def _no(story_id: int) -> str:
    return f"There is no story #{story_id} (it may have been deleted, or pruned after the retention period)."


async def setup(bot: TaleweaverBot) -> None:
    bot.add_dynamic_items(StoryButton)
    await bot.add_cog(StoryCog(bot))
