"""`/story`: write a story from an opening line, streamed into the reply, with buttons under it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs.errors import RESTARTING, on_app_command_error
from cogs.utils.formats import EMBED_DESCRIPTION_LIMIT, EMBED_FOOTER_LIMIT, clean_text, plain, tail, truncate
from cogs.utils.options import narrow_option, prompt_chars, prompt_help
from cogs.utils.replies import NO_MENTIONS, send_error, withdraw
from cogs.utils.throttle import EditThrottle
from cogs.why import answer_why
from core.errors import RequestTimeoutError, TaleweaverError
from core.prompts import PromptKind, check_text
from core.service import StopReason, StoryRequest, StoryResult, StoryStream, WhyRequest
from core.settings import FIELDS, SEED_MAX, STRATEGIES, DecodingSettings
from store import ResolvedSettings, Scope, StoreUnavailableError, resolve_settings

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

CURSOR = " ▌"
BOOT_ID = secrets.token_hex(4)
"""Part of every story button's custom_id: a press on a button from before a restart (whose
story is no longer in memory) is recognised and answered instead of failing silently."""
STALE_BUTTON = (
    "This story was written before the bot restarted, so its buttons no longer work. Start a new one with `/story`."
)
PERSONAL_UNAVAILABLE = "Your personal settings are unavailable right now, so this story uses the defaults."
TOKEN_LIFETIME_S = 15 * 60
VIEW_TIMEOUT_S = 14 * 60
"""Buttons outlive the interaction token only by editing with it, and that token dies at 15 min."""
STORY_COLOUR = discord.Colour(0x8E6CBF)
CUT_BY_RESTART = "⚠️ Cut short: the bot is restarting. Start a new story with /story in a minute."
SHUTDOWN_GRACE_S = 8.0
STOP_STATUS = {StopReason.STOPPED: "⏹️ stopped", StopReason.EOS: "the end", StopReason.LENGTH: ""}
_LEN, _TEMP = FIELDS["max_new_tokens"], FIELDS["temperature"]
PROMPT_HELP = "The opening line of the story."


@dataclass
class StoryState:
    """One story message: what it says so far and how it was made, for the buttons."""

    owner_id: int
    guild_id: int | None
    opening: str
    settings: DecodingSettings
    notes: tuple[str, ...] = ()
    text: str = ""
    seeds: list[int] = field(default_factory=list)
    stream: StoryStream | None = None
    """The running story, if any (so Stop can reach it)."""


def render_story(
    state: StoryState, *, running: bool, status: str, result: StoryResult | None = None
) -> tuple[discord.Embed, discord.File | None]:
    """The story embed (and the full text as a file when it does not fit)."""
    opening = clean_text(state.opening)
    body = clean_text(state.text[len(state.opening) :])
    stripped = opening.rstrip()
    text = f"**{stripped}**{opening[len(stripped) :]}{body}" if stripped else body
    attachment = None
    if running:
        text = tail(text + CURSOR, EMBED_DESCRIPTION_LIMIT)
    elif len(text) > EMBED_DESCRIPTION_LIMIT:
        note = "\n\n*(The story is longer than a message: the whole of it is attached as story.txt.)*"
        text = truncate(text, EMBED_DESCRIPTION_LIMIT - len(note)) + note
        attachment = discord.File(_as_bytes(state.text), filename="story.txt")
    embed = discord.Embed(description=text or "…", colour=STORY_COLOUR)
    used = state.settings.replace(seed=state.seeds[-1]) if state.seeds else state.settings
    outcome = [f"{result.new_tokens} tokens in {result.elapsed_s:.1f} s"] if result is not None else []
    outcome += [status] if status else []
    lines = [used.summary(), " · ".join(outcome), *state.notes]
    embed.set_footer(text=truncate(plain("\n".join(line for line in lines if line)), EMBED_FOOTER_LIMIT))
    return embed, attachment


def _as_bytes(text: str):
    import io

    return io.BytesIO(text.encode("utf-8", "replace"))


class StoryView(discord.ui.View):
    """Continue, Regenerate and Stop for the story's requester only; Why? for anyone."""

    def __init__(self, cog: StoryCog, state: StoryState) -> None:
        super().__init__(timeout=VIEW_TIMEOUT_S)
        self.cog = cog
        self.state = state
        self.message_interaction: discord.Interaction | None = None
        self.message_interaction_at = 0.0
        for button, action in (
            (self.continue_button, "continue"),
            (self.regenerate_button, "regenerate"),
            (self.stop_button, "stop"),
            (self.why_button, "why"),
        ):
            button.custom_id = f"story:{action}:{BOOT_ID}:{state.owner_id}:{secrets.token_hex(4)}"
        self.set_running(True)

    def use_interaction(self, interaction: discord.Interaction) -> None:
        """The interaction whose token edits the story message from now on (valid 15 minutes)."""
        self.message_interaction = interaction
        self.message_interaction_at = time.monotonic()

    def set_running(self, running: bool) -> None:
        self.continue_button.disabled = running
        self.regenerate_button.disabled = running
        self.stop_button.disabled = not running
        self.why_button.disabled = running

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.state.owner_id or _custom_id(interaction) == self.why_button.custom_id:
            return True
        await send_error(
            interaction, "Only the person who asked for this story can use its buttons. Start your own with `/story`!"
        )
        return False

    async def on_timeout(self) -> None:
        # A press that was refused (busy) restarts the timeout without a fresh token: never
        # edit with a token that has expired.
        if self.message_interaction is None or time.monotonic() - self.message_interaction_at >= TOKEN_LIFETIME_S:
            return
        for item in self.children:
            item.disabled = True
        try:
            await self.message_interaction.edit_original_response(view=self, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.debug("could not disable buttons of an expired story", exc_info=True)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        await on_app_command_error(interaction, error)

    @discord.ui.button(label="Continue", emoji="➕", style=discord.ButtonStyle.primary)
    async def continue_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await self.cog.write(interaction, self, continuing=True)

    @discord.ui.button(label="Regenerate", emoji="🔄", style=discord.ButtonStyle.secondary)
    async def regenerate_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await self.cog.write(interaction, self, continuing=False, fresh_seed=True)

    @discord.ui.button(label="Stop", emoji="⏹️", style=discord.ButtonStyle.danger)
    async def stop_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        if self.state.stream is not None:
            self.state.stream.stop()

    @discord.ui.button(label="Why?", style=discord.ButtonStyle.secondary)
    async def why_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Anyone may ask: the story's next word explained privately, with the story's tail as the prompt."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        request = WhyRequest(user_id=interaction.user.id, prompt=self.state.text, keep_tail=True)
        await answer_why(self.cog.bot, interaction, request)


def _custom_id(interaction: discord.Interaction) -> str:
    return str((getattr(interaction, "data", None) or {}).get("custom_id", ""))


class StoryCog(commands.Cog):
    """Story writing."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot
        self.restarting = False
        self._writing: dict[StoryView, asyncio.Task] = {}
        """Stories being written now, so a shutdown can end them and tell their users."""
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

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Answer presses on story buttons from before a restart, and take those buttons away."""
        if interaction.type != discord.InteractionType.component:
            return
        parts = str((interaction.data or {}).get("custom_id", "")).split(":")
        if len(parts) < 4 or parts[0] != "story" or parts[2] == BOOT_ID:
            return
        if parts[3] == str(interaction.user.id):  # only the story's owner takes its buttons away
            await interaction.response.edit_message(view=None, allowed_mentions=NO_MENTIONS)
        await send_error(interaction, STALE_BUTTON)

    @app_commands.command(name="story", description="Write a story that starts with your opening line.")
    @app_commands.describe(
        prompt=PROMPT_HELP,
        length=f"How many tokens to write ({_LEN.minimum}-{_LEN.maximum}); default: your setting.",
        strategy="How words are chosen, for this story only; default: your setting.",
        temperature=f"Sampling temperature ({_TEMP.minimum}-{_TEMP.maximum}), for this story only.",
        seed="A seed to reproduce a story (sampling only).",
    )
    @app_commands.choices(strategy=[app_commands.Choice(name=name, value=name) for name in STRATEGIES])
    async def story(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 2000],
        length: app_commands.Range[int, _LEN.minimum, _LEN.maximum] | None = None,
        strategy: str | None = None,
        temperature: app_commands.Range[float, _TEMP.minimum, _TEMP.maximum] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
    ) -> None:
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
        view = StoryView(self, state)
        view.use_interaction(interaction)
        await self.write(interaction, view, continuing=False, first=True)

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

    async def write(
        self,
        interaction: discord.Interaction,
        view: StoryView,
        *,
        continuing: bool,
        first: bool = False,
        fresh_seed: bool = False,
    ) -> None:
        """Run one generation into the story message, editing it as text arrives.

        The seed is the settings' own unless there is none or a new story is asked for
        (Regenerate), which would otherwise repeat itself word for word.
        """
        state = view.state
        if self.restarting:
            await (withdraw(interaction, RESTARTING) if first else send_error(interaction, RESTARTING))
            return
        fixed = state.settings.seed is not None and not fresh_seed
        seed = state.settings.seed if fixed else random.randrange(SEED_MAX)
        prompt = state.text if continuing else state.opening
        request = StoryRequest(
            user_id=state.owner_id, prompt=prompt, settings=state.settings, seed=seed, keep_tail=continuing
        )
        try:
            stream = await self.bot.service.story(request)
        except TaleweaverError as exc:
            if first:
                await withdraw(interaction, exc.message)
            else:
                await send_error(interaction, exc.message)
            return
        previous_text = state.text
        state.text = prompt
        state.seeds.append(seed)
        state.stream = stream
        view.set_running(True)
        view.use_interaction(interaction)
        throttle = EditThrottle(self.bot.config.discord.edit_interval_s)
        status = f"⏳ waiting: number {stream.queue_position} in the queue" if stream.queue_position else "✍️ writing…"
        await self._edit(interaction, state, view, running=True, status=status)
        result: StoryResult | None = None
        error: TaleweaverError | None = None
        self._writing[view] = asyncio.current_task()
        try:
            async for delta in stream:
                state.text += delta
                if throttle.ready():
                    await self._edit(interaction, state, view, running=True, status="✍️ writing…")
            result = await stream.result()
        except TaleweaverError as exc:
            error = exc
        finally:
            state.stream = None
            view.set_running(False)
            self._writing.pop(view, None)
        if error is not None and not isinstance(error, RequestTimeoutError) and state.text == prompt:
            state.text = previous_text
        status = STOP_STATUS.get(result.stop_reason, "") if result else f"⚠️ {error.message}"
        if self.restarting:
            status = CUT_BY_RESTART
            for item in view.children:  # its buttons die with this process
                item.disabled = True
        await self._edit(interaction, state, view, running=False, status=status, result=result)

    async def shutdown(self) -> None:
        """The bot is going down: stop every story being written, and wait while each tells its user."""
        self.restarting = True
        writes = list(self._writing.items())
        for view, _ in writes:
            if view.state.stream is not None:
                view.state.stream.stop()
        if writes:
            log.info("shutting down: ending %d stories being written", len(writes))
            await asyncio.wait([task for _, task in writes], timeout=SHUTDOWN_GRACE_S)

    async def _edit(
        self,
        interaction: discord.Interaction,
        state: StoryState,
        view: StoryView,
        *,
        running: bool,
        status: str,
        result: StoryResult | None = None,
    ) -> None:
        embed, attachment = render_story(state, running=running, status=status, result=result)
        kwargs: dict[str, Any] = {"content": None, "embed": embed, "view": view, "allowed_mentions": NO_MENTIONS}
        kwargs["attachments"] = [attachment] if attachment is not None else []
        try:
            await interaction.edit_original_response(**kwargs)
        except discord.NotFound:
            log.info("story message was deleted; stopping its generation")
            if state.stream is not None:
                state.stream.stop()


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(StoryCog(bot))
