"""`/help`: a private page on the commands, the buttons under a story, where settings come from, what
is kept and for how long, and who sees what.

The guide names commands, their subcommands and options, and buttons; tests/cogs/test_help_cog.py
checks every name against the bot's registered commands and the story buttons, both ways.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.story import ANYONE
from cogs.story_view import ACTIONS, STORY_COLOUR, StoryButton
from cogs.utils.replies import NO_MENTIONS
from core.config import Config

if TYPE_CHECKING:
    from bot import TaleweaverBot

COMMAND_GUIDE: dict[str, str] = {
    "story": "write a story from your opening line (`prompt:`). For this story only: `length:`, `strategy:`, "
    "`temperature:`, `seed:`. `replay:` writes a kept story again word for word; `thread:` opens a thread on it.",
    "why": "which words of a text (`prompt:`) drive the model's next word: bars and a chart; "
    "`view:` attention adds each attention head.",
    "settings": "how I write for you, everywhere: `show`, `set`, `preset`, `reset`.",
    "server-settings": "this server's defaults and limits, for members with Manage Server: "
    "`show`, `set`, `preset`, `limit`, `reset`.",
    "tale": "`add` a line in a story's thread and I write on from it; `delete` a story's record; "
    "`threads` allows or forbids story threads here (Manage Server).",
    "help": "this page.",
}
"""Every top-level command, what it does, and (in backticks) its subcommands or options."""

BUTTON_GUIDE: dict[str, str] = {
    "continue": "writes the next part.",
    "regenerate": "writes the last part again as a new draft (the old one is kept).",
    "stop": "ends the part being written; it is kept as far as it got.",
    "prev": "and",
    "next": "show the other drafts of the last part.",
    "why": "explains which words drive the story's next word, from the story's last {tokens} tokens.",
    "details": "shows every part's settings and seed: its recipe for `/story replay:`.",
    "thread": "opens a thread where anyone may add a line with `/tale add`.",
    "delete": "forgets the story's record; the message stays.",
}
"""Each story button, by action, in the order they appear."""


def label(action: str) -> str:
    return StoryButton.STYLES[action][0] or action


def buttons_text(config: Config) -> str:
    tokens = config.limits.max_prompt_tokens
    lines = " ".join(f"**{label(action)}** {BUTTON_GUIDE[action].format(tokens=tokens)}" for action in ACTIONS)
    anyone = " and ".join(f"**{label(action)}**" for action in ACTIONS if action in ANYONE)
    return (
        f"{lines}\nAnyone may press {anyone} (the answer is private). **{label('delete')}** is for the story's "
        "owner and members with Manage Messages; the other buttons are the owner's."
    )


def kept_text(config: Config) -> str:
    days = config.database.story_retention_days
    how_long = f"for {days} days after its last change" if days else "with no time limit on this bot"
    return (
        "Your settings and this server's, until reset. Each story (its opening, its parts, the settings and seed "
        f"of each, who asked and in which channel) {how_long}, or until its owner or a moderator deletes it "
        "(**Delete**, `/tale delete`). The messages themselves are Discord's: deleting a record leaves them."
    )


PRIVACY = (
    "I read only what you give me in commands, buttons and forms, never the channel's other messages. "
    "Your prompts go to this bot's own model (no outside AI service), and are kept only as parts of your stories. "
    "Errors and your settings are private replies; no reply of mine pings anyone."
)
SETTINGS_ORDER = (
    "Each value comes from the first that has one: the command's own options, your `/settings`, this server's "
    "defaults (`/server-settings`), the bot's defaults. The bot's cap and the server's limits then lower what is "
    "too high. `/settings show` says where each of yours came from."
)


def help_embed(config: Config) -> discord.Embed:
    """The whole guide, in one embed well inside Discord's limits."""
    embed = discord.Embed(
        title="Taleweaver: stories from your opening line",
        description="I write stories with a small language model. Only you see this page.",
        colour=STORY_COLOUR,
    )
    commands_text = "\n".join(f"`/{name}`: {text}" for name, text in COMMAND_GUIDE.items())
    embed.add_field(name="Commands", value=commands_text, inline=False)
    embed.add_field(name="Buttons under a story", value=buttons_text(config), inline=False)
    embed.add_field(name="Where settings come from", value=SETTINGS_ORDER, inline=False)
    embed.add_field(name="What is kept, and for how long", value=kept_text(config), inline=False)
    embed.add_field(name="Privacy", value=PRIVACY, inline=False)
    return embed


class HelpCog(commands.Cog):
    """`/help`."""

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="How Taleweaver works: commands, buttons, settings, privacy.")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            embed=help_embed(self.bot.config), ephemeral=True, allowed_mentions=NO_MENTIONS
        )


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(HelpCog(bot))
