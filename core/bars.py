"""Text bars for `/why`, shared by the terminal (`python -m model why`) and the Discord cog.

Pure Python, no torch: the cogs import it. Lines are meant for a monospace block (a terminal, or
a Discord code block), so every line of one call has the same display width: words are padded
(counting East Asian wide characters as two columns) and cut with "…" when too long. Bars use
the eight partial block characters, so a 20-cell bar has 160 distinguishable lengths.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from core.service import WordImportance

SHOWN_WORDS = 25
"""Words a `/why` reply lists and draws at most: the most important ones, in prompt order."""
FULL = "█"
PARTIALS = " ▏▎▍▌▋▊▉"
"""PARTIALS[k] is a cell filled k/8 of the way."""
MARK = "◀"


def bar(fraction: float, width: int) -> str:
    """A bar `fraction` (0–1) of `width` cells long, padded with spaces to exactly `width` cells.

    Any fraction above zero shows at least a sliver, so "a little" never looks like "nothing".
    """
    if width <= 0:
        return ""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    if fraction > 0 and eighths == 0:
        eighths = 1
    full, rest = divmod(eighths, 8)
    text = FULL * full + (PARTIALS[rest] if rest else "")
    return text + " " * (width - len(text))


def render_bars(
    words: Sequence[WordImportance], width: int = 20, *, word_width: int = 16, mark: str = MARK
) -> list[str]:
    """One line per word, in prompt order: the word, a bar as long as its importance, its σ.

    The most important word (importance 1) is marked with `mark`. `width` is the bar's length in
    cells; `word_width` caps the word column (shorter when every word is shorter).
    """
    if not words:
        return []
    column = min(word_width, max(display_width(printable(w.word)) for w in words))
    best = max(range(len(words)), key=lambda i: words[i].importance)
    lines = []
    for index, word in enumerate(words):
        label = pad(printable(word.word), column)
        suffix = f" {mark}" if index == best and mark else ""
        lines.append(f"{label} {bar(word.importance, width)} σ {word.sigma:<6.3g}{suffix}".rstrip())
    return lines


def render_predictions(
    predictions: Sequence[tuple[str, float]], width: int = 10, *, token_width: int = 14
) -> list[str]:
    """One line per predicted next token: the token (␣ = space, ↵ = new line), a bar, its probability."""
    if not predictions:
        return []
    shown = [visible_token(token) for token, _ in predictions]
    column = min(token_width, max(display_width(t) for t in shown))
    return [f"{pad(t, column)} {bar(p, width)} {100 * p:5.1f}%" for t, (_, p) in zip(shown, predictions, strict=True)]


def visible_token(token: str) -> str:
    """A token with its whitespace made visible, quoted so an empty or odd token is still seen."""
    return "'" + printable(token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")) + "'"


def display_width(text: str) -> int:
    """Columns `text` takes in a monospace font: wide (CJK, most emoji) characters take two."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int) -> str:
    """`text` cut with "…" or padded with spaces to exactly `width` display columns."""
    if display_width(text) > width:
        kept = ""
        for char in text:
            if display_width(kept + char) > width - 1:
                break
            kept += char
        text = kept + "…"
    return text + " " * (width - display_width(text))


def printable(text: str) -> str:
    """A label as it can be shown: format characters (direction overrides and isolates, zero-width
    characters, tags), which draw nothing and could reorder or hide the text, are dropped; control
    characters, private-use and lone surrogates become �. A label of format characters only is �."""
    shown = "".join(
        "�" if unicodedata.category(c) in ("Cc", "Co", "Cs") else c for c in text if unicodedata.category(c) != "Cf"
    )
    return shown or ("�" if text else "")


def most_important(words: Sequence[WordImportance], limit: int) -> list[int]:
    """The indices of the `limit` most important words, in prompt order: what a reply has room for.

    The most important word is always among them; ties keep the earlier word.
    """
    ranked = sorted(range(len(words)), key=lambda i: (-words[i].importance, i))
    return sorted(ranked[: max(1, limit)]) if words else []
