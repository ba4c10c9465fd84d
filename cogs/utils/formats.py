"""Making untrusted generated text safe and small enough for Discord.

Generated text and prompts are untrusted: they may hold mentions, Markdown that breaks the
layout, control characters or lone surrogates. Everything the bot shows passes through
`clean_text`; mentions are additionally disabled on every message (`AllowedMentions.none()`).
"""

from __future__ import annotations

import unicodedata

import discord

MESSAGE_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TITLE_LIMIT = 256
EMBED_FIELD_VALUE_LIMIT = 1024
EMBED_FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
ELLIPSIS = "…"
_KEEP_CONTROLS = {"\n", "\t"}


def clean_text(text: str) -> str:
    """Drop control characters and lone surrogates; escape Markdown and mentions.

    Escaping Markdown keeps a story's `*`, `_`, `` ` `` and `|` as the characters they are
    instead of letting them restyle (or hide) the rest of the message.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    text = "".join(ch for ch in text if ch in _KEEP_CONTROLS or unicodedata.category(ch) != "Cc")
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


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


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split into chunks of at most `limit` characters, preferring paragraph, line, then word breaks.

    Joining the chunks gives back the text exactly, so nothing is lost or duplicated.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        cut = cut + 1 if cut > 0 else limit
        chunks.append(rest[:cut])
        rest = rest[cut:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks
