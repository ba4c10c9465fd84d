"""Making untrusted generated text safe and small enough for Discord.

Generated text and prompts are untrusted: they may hold mentions, Markdown that breaks the
layout, control characters or lone surrogates. Everything the bot shows passes through
`clean_text`; mentions are additionally disabled on every message (`AllowedMentions.none()`).
"""

from __future__ import annotations

import re
import unicodedata

import discord

EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELD_VALUE_LIMIT = 1024
EMBED_FOOTER_LIMIT = 2048
ELLIPSIS = "…"
_KEEP_CONTROLS = {"\n", "\t"}
_HIDDEN = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]")
"""Direction overrides and isolates (which can reorder the rest of the message) and tag characters
(invisible, and able to carry hidden text): shown as nothing, so dropped."""
_MARKUP = re.compile(r"<(?=[@#/]|a?:\w+:\d|t:-?\d|id:)")
"""The start of Discord's angle-bracket markup: user, role and channel mentions of any id length,
slash-command links, custom emoji, timestamps and guild navigation."""


def clean_text(text: str) -> str:
    """Drop control characters, lone surrogates, direction and tag characters; escape Markdown,
    mentions and the rest of Discord's `<…>` markup (a zero-width space after the `<`).

    Escaping Markdown keeps a story's `*`, `_`, `` ` `` and `|` as the characters they are
    instead of letting them restyle (or hide) the rest of the message.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    text = "".join(ch for ch in text if ch in _KEEP_CONTROLS or unicodedata.category(ch) != "Cc")
    text = _HIDDEN.sub("", text)
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    return _MARKUP.sub("<\u200b", text)


def truncate(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """Cut `text` to at most `limit` characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def tail(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """The last `limit` characters of `text` (while streaming, the newest words matter most)."""
    if len(text) <= limit:
        return text
    return marker + text[-(limit - len(marker)) :]


def plain(text: str) -> str:
    """Text for a place where Discord shows Markdown literally (embed footers, author names):
    code spans and bold lose their marks instead of showing backticks and asterisks."""
    return text.replace("**", "").replace("`", "")
