"""How a story message looks: its embed, and buttons that carry the story id and so outlive restarts.

The buttons hold no state: each is a `DynamicItem` whose custom id is `story:<action>:<story id>`,
and a press loads the story from the database. A press after a restart therefore works like any
other, and a press on a story whose record was deleted is answered and takes the buttons away.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import discord

from cogs.utils.formats import EMBED_DESCRIPTION_LIMIT, EMBED_FOOTER_LIMIT, clean_text, plain, tail, truncate
from core.service import StoryResult, StoryStream
from core.settings import DecodingSettings
from store import Story

CURSOR = " ▌"
STORY_ID_MAX = 2**53 - 1
"""Discord's integer options stop at 2^53 - 1 (story numbers are SQLite row ids, far below). The
options do not declare it (a client would show it as the range); a larger number from a modified
client is answered as a story that does not exist."""
STORY_COLOUR = discord.Colour(0x8E6CBF)
ACTIONS = ("continue", "regenerate", "stop", "prev", "next", "why", "details", "thread", "delete")
TEMPLATE = re.compile(r"story:(?P<action>" + "|".join(ACTIONS) + r"):(?P<story_id>[0-9]{1,19})")


class ButtonHandler(Protocol):
    """The cog that answers story buttons (`StoryCog`): a view knows its handler by name, not by import."""

    async def on_button(self, interaction: discord.Interaction, action: str, story_id: int) -> None: ...


HANDLER_COG = "StoryCog"


@dataclass
class StoryState:
    """One story as it is being shown: what it says so far and how it was made."""

    owner_id: int
    guild_id: int | None
    opening: str
    settings: DecodingSettings
    notes: tuple[str, ...] = ()
    text: str = ""
    seeds: list[int] = field(default_factory=list)
    stream: StoryStream | None = None
    """The running part, if any (so Stop can reach it)."""
    story_id: int | None = None
    """None: the story could not be saved (the database is unavailable), so it has no buttons."""
    draft: tuple[int, int] = (1, 1)
    """The shown part's draft number and how many drafts it has."""
    thread_id: int | None = None
    with_buttons: bool = True
    """False for a part written in a story's thread: that reply shows the line and its part only."""
    message_saved: bool = False
    """Whether the story message's id is in the record (saved at the first edit of `/story`'s reply)."""


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
        attachment = discord.File(io.BytesIO(state.text.encode("utf-8", "replace")), filename="story.txt")
    embed = discord.Embed(description=text or "…", colour=STORY_COLOUR)
    used = state.settings.replace(seed=state.seeds[-1]) if state.seeds else state.settings
    outcome = [f"{result.new_tokens} tokens in {result.elapsed_s:.1f} s"] if result is not None else []
    outcome += [status] if status else []
    place = [f"story #{state.story_id}"] if state.story_id is not None else []
    if state.draft[1] > 1:
        place.append(f"draft {state.draft[0]}/{state.draft[1]}")
    lines = [used.summary(), " · ".join(outcome), " · ".join(place), *state.notes]
    embed.set_footer(text=truncate(plain("\n".join(line for line in lines if line)), EMBED_FOOTER_LIMIT))
    return embed, attachment


class StoryButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """One button of one story; the press goes to `StoryCog.on_button`."""

    STYLES: dict[str, tuple[str | None, str | None, discord.ButtonStyle, int]] = {
        "continue": ("Continue", "➕", discord.ButtonStyle.primary, 0),
        "regenerate": ("Regenerate", "🔄", discord.ButtonStyle.secondary, 0),
        "stop": ("Stop", "⏹️", discord.ButtonStyle.danger, 0),
        "prev": ("◀", None, discord.ButtonStyle.secondary, 0),
        "next": ("▶", None, discord.ButtonStyle.secondary, 0),
        "why": ("Why?", None, discord.ButtonStyle.secondary, 1),
        "details": ("Details", "📜", discord.ButtonStyle.secondary, 1),
        "thread": ("Thread", "🧵", discord.ButtonStyle.secondary, 1),
        "delete": ("Delete", "🗑️", discord.ButtonStyle.danger, 1),
    }

    def __init__(self, action: str, story_id: int, *, disabled: bool = False) -> None:
        label, emoji, style, row = self.STYLES[action]
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=style,
                custom_id=f"story:{action}:{story_id}",
                disabled=disabled,
                row=row,
            )
        )
        self.action = action
        self.story_id = story_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> StoryButton:
        return cls(match["action"], int(match["story_id"]))

    async def callback(self, interaction: discord.Interaction) -> Any:
        cog = cast(ButtonHandler | None, interaction.client.get_cog(HANDLER_COG))  # type: ignore[attr-defined]
        if cog is not None:
            await cog.on_button(interaction, self.action, self.story_id)


def story_view(state: StoryState, *, running: bool) -> discord.ui.View | None:
    """The buttons under a story: while a part is written only Stop works."""
    if state.story_id is None or not state.with_buttons:
        return None
    view = discord.ui.View(timeout=None)
    index, count = state.draft
    enabled = {
        "continue": not running,
        "regenerate": not running,
        "stop": running,
        "prev": not running and index > 1,
        "next": not running and index < count,
        "why": not running,
        "details": not running,
        "thread": not running and state.guild_id is not None and state.thread_id is None,
        "delete": not running,
    }
    for action in ACTIONS:
        view.add_item(StoryButton(action, state.story_id, disabled=not enabled[action]))
    return view


def precision_note(recorded: str, now: str) -> str:
    """Said under a replayed part written in another precision than the one in force."""
    return f"This part was written in {recorded} and is replayed in {now}, so its words may differ."


def recipe_embed(story: Story) -> discord.Embed:
    """Every part's settings and seed: what `/story replay` writes again, word for word."""
    lines = [f"**Opening:** {truncate(clean_text(story.opening), 300)}", ""]
    for number, part in enumerate(story.chain, 1):
        added = (
            f" after the line “{truncate(clean_text(part.added.strip()), 120)}” by <@{part.author_id}>"
            if part.added
            else ""
        )
        written_in = f" in {part.precision}" if part.precision else ""
        lines.append(f"**Part {number}**{added}: `{part.settings.replace(seed=part.seed).summary()}`{written_in}")
    if not story.chain:
        lines.append("*No part is finished yet.*")
    if len(story.drafts) > 1:
        lines.append(f"\nThe last part is draft {story.draft_index + 1} of {len(story.drafts)}.")
    lines.append(f"\nReplay it: `/story replay:{story.id}`")
    embed = discord.Embed(title=f"Story #{story.id}: its recipe", colour=STORY_COLOUR)
    embed.description = truncate("\n".join(lines), EMBED_DESCRIPTION_LIMIT)
    return embed
