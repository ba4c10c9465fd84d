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


def clean_prompt(text: str) -> str:
    """Lone surrogates become U+FFFD (the tokenizer cannot encode them) and control characters
    other than newline and tab are dropped; everything else, emoji and right-to-left text
    included, is kept as the user typed it."""
    return "".join(
        "\ufffd" if unicodedata.category(ch) == "Cs" else ch
        for ch in text
        if ch in _KEEP or unicodedata.category(ch) != "Cc"
    )


def check_text(prompt: str, kind: PromptKind, token_limit: int | None = None) -> str:
    """The cleaned prompt, or a PromptError when it is blank or far too long to fit `token_limit`."""
    cleaned = clean_prompt(prompt)
    if not cleaned.strip():
        raise PromptError(_EMPTY[kind])
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
