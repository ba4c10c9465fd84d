"""`/why`: which words of a prompt drive the model's next word, as importance bars and a chart."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.formats import (
    EMBED_DESCRIPTION_LIMIT,
    EMBED_FIELD_VALUE_LIMIT,
    EMBED_FOOTER_LIMIT,
    clean_text,
    plain,
    truncate,
)
from cogs.utils.options import narrow_option, prompt_chars, prompt_help
from cogs.utils.replies import NO_MENTIONS, send_error, withdraw
from cogs.utils.throttle import EditThrottle
from core.bars import SHOWN_WORDS, bar, most_important, printable, render_bars, render_predictions
from core.errors import TaleweaverError
from core.prompts import PromptKind, check_text, clean_prompt
from core.service import WHY_VIEWS, WhyProgress, WhyRequest, WhyResult

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

WHY_COLOUR = discord.Colour(0x2F6DB5)
PROMPT_HELP = "The text whose next word to explain."
BAR_WIDTH = 16
_FENCE = "```"


def _code_block(lines: list[str], limit: int, *, what: str) -> str:
    """Lines in a code block within `limit` characters; lines that do not fit are left out with a
    note. A backtick in a user's word could close the block early, so it is swapped for a lookalike;
    mentions are escaped like everywhere else (they do not ping in embeds, but should not read as one)."""
    safe = [discord.utils.escape_mentions(line.replace("`", "ˋ")) for line in lines]
    shown = list(safe)
    while shown:
        omitted = len(safe) - len(shown)
        note = f"\n…and {omitted} more {what}." if omitted else ""
        text = f"{_FENCE}\n" + "\n".join(shown) + f"\n{_FENCE}" + note
        if len(text) <= limit:
            return text
        shown.pop()
    return truncate(f"({len(safe)} {what}: see the picture)", limit)


def render_why(result: WhyResult, scope: str = "") -> tuple[list[discord.Embed], list[discord.File]]:
    """The reply: which text is explained (`scope`, when it is not simply the prompt), one bar per word
    (the most important ones when there are many, the most important marked), the top-5 predictions,
    the chart(s). The text and the chart show the same words.

    The bars chart is the first embed's image; the attention picture, when asked for, gets an
    embed of its own below it, so neither picture hangs outside an embed.
    """
    chosen = [result.words[index] for index in most_important(result.words, SHOWN_WORDS)]
    lines = [scope] if scope else []
    if chosen:
        best = max(chosen, key=lambda w: w.importance)
        shown = discord.utils.escape_markdown(discord.utils.escape_mentions(printable(best.word)))[:100]
        lines.append(
            f"Longer bar = more important (smaller σ: the word tolerates less noise). Most important: **{shown}**"
        )
    if len(chosen) < len(result.words):
        lines.append(f"The {len(chosen)} most important of its {len(result.words)} words, in the order they come:")
    head = truncate("\n".join(lines), 600) + "\n"
    bars = _code_block(render_bars(chosen, BAR_WIDTH), EMBED_DESCRIPTION_LIMIT - len(head), what="words")
    embed = discord.Embed(title="Why this next word?", description=head + bars, colour=WHY_COLOUR)
    embed.add_field(
        name="The model's next-word guesses",
        value=_code_block(render_predictions(result.top_predictions), EMBED_FIELD_VALUE_LIMIT, what="guesses"),
        inline=False,
    )
    # One time only: the whole explanation's, pictures included; the notes say how it stopped.
    footer = [f"{result.iterations} steps in {result.elapsed_s:.1f} s", *result.notes]
    embed.set_footer(text=truncate(plain(" · ".join(footer)), EMBED_FOOTER_LIMIT))
    embeds, files = [embed], []
    if result.image_png:
        files.append(discord.File(io.BytesIO(result.image_png), filename="why.png"))
        embed.set_image(url="attachment://why.png")
    if result.attention_png:
        files.append(discord.File(io.BytesIO(result.attention_png), filename="attention.png"))
        attention = discord.Embed(
            title="Attention of the last position",
            description="Per layer (rows) and head (columns); a darker line = more attention to that token.",
            colour=WHY_COLOUR,
        )
        attention.set_image(url="attachment://attention.png")
        embeds.append(attention)
    return embeds, files


def story_scope(asked: str, result: WhyResult) -> str:
    """What a story's Why? explains: the whole story, or (a long one) its last tokens, from where.

    The service explains the cleaned story (`core.prompts`), cut to its last tokens when too long."""
    words = f"{len(result.words)} word{'' if len(result.words) == 1 else 's'}"
    if result.prompt == clean_prompt(asked):
        return f"Explained: the whole story ({words})."
    start = clean_text(" ".join(result.prompt.split()[:6]))
    return (
        f"Explained: the story's last {words} ({len(result.token_sigmas)} tokens, as much as the model reads "
        f"at once), from “{start}…”."
    )


def render_progress(progress: WhyProgress) -> discord.Embed:
    fraction = progress.fraction
    return discord.Embed(
        title="Why this next word?",
        colour=WHY_COLOUR,
        description=f"`{bar(fraction, 20)}` {fraction:4.0%}\n{truncate(progress.status, 200)}",
    )


class WhyCog(commands.Cog):
    """Explanations of the model's next-word prediction."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot
        narrow_option(
            self.why, "prompt", max_value=prompt_chars(bot.config), description=prompt_help(bot.config, PROMPT_HELP)
        )

    @app_commands.command(name="why", description="Show which words of a prompt drive the model's next word.")
    @app_commands.describe(
        prompt=PROMPT_HELP,
        view="bars: importance per word (default); attention: the attention of each head too.",
    )
    @app_commands.choices(view=[app_commands.Choice(name=name, value=name) for name in WHY_VIEWS])
    async def why(
        self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 2000], view: str = "bars"
    ) -> None:
        try:
            check_text(prompt, PromptKind.WHY)
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        if view not in WHY_VIEWS:
            await send_error(interaction, "`view` must be `bars` or `attention`.")
            return
        await interaction.response.defer(thinking=True)
        await answer_why(self.bot, interaction, WhyRequest(user_id=interaction.user.id, prompt=prompt, view=view))


async def answer_why(bot: TaleweaverBot, interaction: discord.Interaction, request: WhyRequest) -> None:
    """Run one explanation into a deferred reply: progress while it works, then `render_why`.

    Used by `/why` and by the story's "Why?" button (whose deferral is ephemeral, so the answer is
    too; its request keeps the story's tail, and the reply says which part that is).
    """
    try:
        stream = await bot.service.why(request)
    except TaleweaverError as exc:
        await withdraw(interaction, exc.message)
        return
    throttle = EditThrottle(bot.config.discord.edit_interval_s)
    try:
        async for progress in stream:
            if throttle.ready():
                await interaction.edit_original_response(embed=render_progress(progress), allowed_mentions=NO_MENTIONS)
        result = await stream.result()
    except TaleweaverError as exc:
        await withdraw(interaction, exc.message)
        return
    finally:
        stream.stop()  # if the reply can no longer be edited, the work it waits for ends too
    embeds, files = render_why(result, story_scope(request.prompt, result) if request.keep_tail else "")
    await interaction.edit_original_response(embeds=embeds, attachments=files, allowed_mentions=NO_MENTIONS)


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(WhyCog(bot))
