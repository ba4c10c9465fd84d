"""Untrusted prompt text: cleaned once, checked once, with one message per way it can be wrong.

The cogs check what they can before deferring (an empty prompt is answered at once, privately);
the model service checks the rest once the tokenizer can count (too many tokens, or a `/why`
prompt of one token). Both call these functions, so a rule and its message are written once.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum

from core.errors import PromptError

_KEEP = {"\n", "\t"}
MAX_CHARS_PER_TOKEN = 16
"""No token of a byte-level BPE is this long in practice, so a prompt of more characters than
limit × this cannot fit: refuse it before spending time tokenising 100 000 characters."""
WHY_MIN_TOKENS = 2
"""`/why` ranks the prompt's tokens against each other: one token has nothing to compare."""


class PromptKind(StrEnum):
    STORY = "story"
    WHY = "why"


_EMPTY = {
    PromptKind.STORY: "Please give the story an opening line (it was empty).",
    PromptKind.WHY: "Please give a prompt to explain (it was empty).",
}


_INVISIBLE = {
    PromptKind.STORY: "Please give the story an opening line you can see (that one is only invisible characters).",
    PromptKind.WHY: "Please give a prompt you can see (that one is only invisible characters).",
}


def clean_prompt(text: str) -> str:
    """Lone surrogates become U+FFFD (the tokenizer cannot encode them) and control characters
    other than newline and tab are dropped; everything else, emoji and right-to-left text
    included, is kept as the user typed it."""
    return "".join(
        "\ufffd" if unicodedata.category(ch) == "Cs" else ch
        for ch in text
        if ch in _KEEP or unicodedata.category(ch) != "Cc"
    )


_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"}
"""Controls, format characters (zero-width, direction, tags, BOM), unassigned code points, spaces
and lone combining marks: none of them shows anything on its own."""
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5")
"""Letters and symbols that render as nothing: the Hangul fillers, Braille blank, Khmer inherent vowels."""


def is_visible(ch: str) -> bool:
    """Whether `ch` shows something on screen by itself."""
    return ch not in _BLANK_LETTERS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES


def check_text(prompt: str, kind: PromptKind, token_limit: int | None = None) -> str:
    """The cleaned prompt, or a PromptError when it is not text, blank or invisible, or far too long
    to fit `token_limit`. (Discord's client always sends text; a modified client may send a number.)"""
    if not isinstance(prompt, str):
        raise PromptError(f"The prompt must be text, not {type(prompt).__name__}. Nothing was done.")
    cleaned = clean_prompt(prompt)
    if not cleaned.strip():
        raise PromptError(_EMPTY[kind])
    if not any(is_visible(ch) for ch in cleaned):
        raise PromptError(_INVISIBLE[kind])
    if token_limit is not None and len(cleaned) > token_limit * MAX_CHARS_PER_TOKEN:
        raise PromptError(
            f"That prompt is too long: at most {token_limit} tokens (about {token_limit * 4} characters)."
        )
    return cleaned


def check_token_count(count: int, limit: int, kind: PromptKind) -> None:
    """Raise a PromptError a user can act on when `count` tokens do not suit `kind`."""
    if count > limit:
        raise PromptError(f"That prompt is {count} tokens long; the limit is {limit} tokens.")
    if kind is PromptKind.WHY and count < WHY_MIN_TOKENS:
        raise PromptError(
            "That prompt is a single token, so there is nothing to compare: /why ranks the words of a "
            "prompt against each other. Give it at least two words."
        )
