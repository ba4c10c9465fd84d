"""Cleaning untrusted prompt text before it reaches the tokenizer."""

from __future__ import annotations

import unicodedata

_KEEP = {"\n", "\t"}


def clean_prompt(text: str) -> str:
    """Lone surrogates become U+FFFD (the tokenizer cannot encode them) and control characters
    other than newline and tab are dropped; everything else, emoji and right-to-left text
    included, is kept as the user typed it."""
    return "".join(
        "\ufffd" if unicodedata.category(ch) == "Cs" else ch
        for ch in text
        if ch in _KEEP or unicodedata.category(ch) != "Cc"
    )
