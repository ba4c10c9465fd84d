"""`/why`: which words of a prompt drive the model's next word, as importance bars and a chart."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.story import EditThrottle
from cogs.utils.formats import EMBED_DESCRIPTION_LIMIT, EMBED_FIELD_VALUE_LIMIT, EMBED_FOOTER_LIMIT, truncate
from cogs.utils.replies import NO_MENTIONS, send_error, withdraw
from model.api import WhyRequest, WhyResult
from model.bars import bar, render_bars, render_predictions
from model.errors import TaleweaverError

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

WHY_COLOUR = discord.Colour(0x2F6DB5)
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
        note = f"\n…and {omitted} more {what} (all of them are in the picture)." if omitted else ""
        text = f"{_FENCE}\n" + "\n".join(shown) + f"\n{_FENCE}" + note
        if len(text) <= limit:
            return text
        shown.pop()
    return truncate(f"({len(safe)} {what}: see the picture)", limit)


def render_why(result: WhyResult) -> tuple[discord.Embed, list[discord.File]]:
    """The reply: one bar per word (most important marked), the top-5 predictions, the chart(s)."""
    description = _code_block(render_bars(result.words, BAR_WIDTH), EMBED_DESCRIPTION_LIMIT - 200, what="words")
    best = max(result.words, key=lambda w: w.importance) if result.words else None
    if best is not None:
        shown = discord.utils.escape_markdown(discord.utils.escape_mentions(best.word))[:100]
        description = (
            truncate(
                f"Longer bar = more important (smaller σ: the word tolerates less noise). "
                f"Most important: **{shown}**\n",
                200,
            )
            + description
        )
    embed = discord.Embed(title="Why this next word?", description=description, colour=WHY_COLOUR)
    embed.add_field(
        name="The model's next-word guesses",
        value=_code_block(render_predictions(result.top_predictions), EMBED_FIELD_VALUE_LIMIT, what="guesses"),
        inline=False,
    )
    footer = [
        f"{result.iterations} steps in {result.elapsed_s:.1f} s"
        + (" (stopped when the loss stopped improving)" if result.stopped_early else ""),
        *result.notes,
    ]
    embed.set_footer(text=truncate(" · ".join(footer), EMBED_FOOTER_LIMIT))
    files = []
    if result.image_png:
        files.append(discord.File(io.BytesIO(result.image_png), filename="why.png"))
        embed.set_image(url="attachment://why.png")
    if result.attention_png:
        files.append(discord.File(io.BytesIO(result.attention_png), filename="attention.png"))
        embed.set_image(url="attachment://attention.png")
    return embed, files


def render_progress(fraction: float, status: str) -> discord.Embed:
    embed = discord.Embed(
        title="Why this next word?",
        colour=WHY_COLOUR,
        description=f"`{bar(fraction, 20)}` {fraction:4.0%}\n{truncate(status, 200)}",
    )
    return embed


class WhyCog(commands.Cog):
    """Explanations of the model's next-word prediction."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot

    @app_commands.command(name="why", description="Show which words of a prompt drive the model's next word.")
    @app_commands.describe(
        prompt="The text whose next word to explain (at least two words).",
        view="bars: importance per word (default); attention: the attention of each head too.",
    )
    @app_commands.choices(
        view=[app_commands.Choice(name="bars", value="bars"), app_commands.Choice(name="attention", value="attention")]
    )
    async def why(
        self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 2000], view: str = "bars"
    ) -> None:
        if not prompt.strip():
            await send_error(interaction, "Please give a prompt to explain (it was empty).")
            return
        if view not in ("bars", "attention"):
            await send_error(interaction, "`view` must be `bars` or `attention`.")
            return
        await interaction.response.defer(thinking=True)
        loop = asyncio.get_running_loop()
        latest: list[tuple[float, str]] = []
        changed = asyncio.Event()

        def progress(fraction: float, status: str) -> None:  # called from the worker thread
            def record() -> None:
                latest.append((fraction, status))
                changed.set()

            loop.call_soon_threadsafe(record)

        request = WhyRequest(user_id=interaction.user.id, prompt=prompt, view=view)
        task = asyncio.create_task(self.bot.service.why(request, progress))
        throttle = EditThrottle(self.bot.config.discord.edit_interval_s)
        while not task.done():
            waiter = asyncio.create_task(changed.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            changed.clear()
            if latest and not task.done() and throttle.ready():
                await interaction.edit_original_response(
                    embed=render_progress(*latest[-1]), allowed_mentions=NO_MENTIONS
                )
        try:
            result = task.result()
        except TaleweaverError as exc:
            await withdraw(interaction, exc.message)
            return
        embed, files = render_why(result)
        await interaction.edit_original_response(embed=embed, attachments=files, allowed_mentions=NO_MENTIONS)


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(WhyCog(bot))
