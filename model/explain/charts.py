"""The `/why` pictures as PNG bytes: word-importance bars and the last position's attention grid.

matplotlib with the headless Agg canvas, drawn on a `Figure` object rather than through pyplot,
so nothing global (the current figure, a GUI backend) is touched from the worker thread.
Prompt text is drawn with `parse_math=False`: a "$5" in a prompt must not start mathtext.
"""

from __future__ import annotations

import io
import math
import textwrap
import warnings
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from core.bars import SHOWN_WORDS, most_important, printable
from core.service import WordImportance

DPI = 100
PICTURE_INCHES = 5.0
"""Every picture is 500 px wide: Discord shows an embed's image at most about 490 px wide (an embed
is 520 px with its padding; a newcomer's client showed a 6-word chart at 488 × 189), so a picture
is seen at its own size, not shrunk. A picture twice as wide would be shown at half size."""
CHART_WORDS = SHOWN_WORDS
"""The bars chart shows at most this many words, the most important ones in prompt order (a story's
Why? explains up to 200 tokens: 160 rows would be shrunk out of legibility)."""
ROW_INCHES = 0.28
WORD_FONT, SIGMA_FONT, TOKEN_FONT, TITLE_FONT, SUBTITLE_FONT = 12.0, 10.0, 10.0, 13.0, 10.0
"""Point sizes; at 100 dpi the smallest, 10 pt, is 14 px on screen (Discord's own small text is 12 px)."""
MIN_FONT = 9.0
"""No text in any picture is smaller (12.5 px at 100 dpi, shown at its own size)."""
MAX_LABEL_CHARS = 16
_TEXT_PATHS = TextToPath()
IMPORTANCE_CMAP = "Blues"
"""Darker = more important, as in the source article's figure."""
Shade = Callable[[float], tuple[float, float, float, float]]
TOKEN_LABEL_INCHES = 0.16
"""Least vertical room for one token label in the attention grid; longer prompts label every k-th token."""
ATTENTION_LABEL_INCHES = 1.25
"""Room left of the grid for the layer numbers and the first row's token labels."""
ATTENTION_TITLE = (
    "Attention of the last position (right of each cell) to each prompt token (left, top to bottom, "
    "labelled in the first row), per layer (rows, L0 first) and head (columns, numbered on top); "
    "darker line = more attention"
)
ATTENTION_TITLE_FONT = 9.0
ATTENTION_LABEL_FONT = 9.0
ATTENTION_MAX_INCHES = 9.0
"""The attention grid's cells take at most this height: more layers share it (a 12-layer grid stays near 1000 px)."""


def importance_png(words: Sequence[WordImportance], *, scale: float) -> bytes:
    """A horizontal bar per word, in prompt order, longer and darker for more important words."""
    return _png(importance_figure(words, scale=scale))


def importance_figure(words: Sequence[WordImportance], *, scale: float) -> Figure:
    """The bars chart: each row carries the word, its bar, σ, and the exact tokens it was made of
    (␣ = a space that belongs to the token); the most important word is starred. At most
    `CHART_WORDS` rows, the most important words in prompt order (the subtitle says so when some
    are left out); one column, as wide as Discord shows it, so the text reads at its own size."""
    chosen = most_important(words, CHART_WORDS)
    shown = [words[index] for index in chosen]
    what = "" if len(shown) == len(words) else f"the {len(shown)} most important of {len(words)} words, in order; "
    subtitle = textwrap.fill(
        f"{what}longer, darker bar = more important; σ = noise the word tolerates (at most {scale:.2g}); "
        "grey: the word's tokens (␣ = a space that is part of the token)",
        _chars_per_line(PICTURE_INCHES * 0.96, SUBTITLE_FONT),
    )
    title_inches = 0.42 + 0.19 * (subtitle.count("\n") + 1)
    rows = len(shown) or 1
    height = title_inches + 0.15 + ROW_INCHES * rows
    figure = Figure(figsize=(PICTURE_INCHES, height), dpi=DPI)
    best = max(range(len(shown)), key=lambda i: shown[i].importance) if shown else -1
    _draw_bar_column(
        figure.add_axes((0.02, 0.1 / height, 0.96, ROW_INCHES * rows / height)),
        shown,
        best,
        _shades(IMPORTANCE_CMAP),
        rows,
    )
    figure.text(
        0.02, 1 - 0.06 / height, "Which words drive the next word", fontsize=TITLE_FONT, weight="bold", va="top"
    )
    figure.text(0.02, 1 - 0.36 / height, subtitle, fontsize=SUBTITLE_FONT, va="top", color="0.25", parse_math=False)
    return figure


def _draw_bar_column(ax, words: Sequence[WordImportance], best: int, cmap: Shade, rows: int) -> None:
    label_x, bar_x, bar_w = 0.0, 0.37, 0.22
    ys = [rows - 1 - row for row in range(len(words))]
    levels = [word.importance for word in words]
    ax.barh(
        ys,
        [max(level, 0.004) * bar_w for level in levels],
        left=bar_x,
        height=0.72,
        color=[cmap(level) for level in levels],
        edgecolor="0.6",
        linewidth=0.4,
    )
    room = (bar_x - 0.01) * PICTURE_INCHES * 0.96 * 72  # points between the label's start and its bar
    for index, (y, word) in enumerate(zip(ys, words, strict=True)):
        mark = "★ " if index == best else ""
        weight = "bold" if index == best else "normal"
        ax.text(
            label_x,
            y,
            _fit(mark + _short(printable(word.word)), room, WORD_FONT, weight),
            va="center",
            ha="left",
            fontsize=WORD_FONT,
            parse_math=False,
            fontweight=weight,
        )
        ax.text(
            bar_x + bar_w + 0.015,
            y,
            f"σ={word.sigma:.2g}",
            va="center",
            ha="left",
            fontsize=SIGMA_FONT,
            parse_math=False,
        )
        pieces = "·".join(_visible(t) for t in word.tokens)
        ax.text(
            bar_x + bar_w + 0.18,
            y,
            _short(pieces, 10),
            va="center",
            ha="left",
            fontsize=TOKEN_FONT,
            color="0.4",
            parse_math=False,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, rows - 0.4)
    ax.set_axis_off()


def attention_png(weights: np.ndarray, tokens: Sequence[str]) -> bytes:
    """A layers × heads grid like BertViz's model view, for the last query position only."""
    return _png(attention_figure(weights, tokens))


def attention_figure(weights: np.ndarray, tokens: Sequence[str]) -> Figure:
    """In each cell, the prompt's tokens run top to bottom on the left and the last position sits on
    the right; a line joins them with an opacity equal to the attention weight. All cells are drawn
    on one Axes with one LineCollection: 144 separate Axes (GPT-2 small) take seconds to draw.
    As wide as Discord shows it, whatever the number of heads (cells get narrower), and at most
    `ATTENTION_MAX_INCHES` tall (layers get shorter); every label stays at a legible size."""
    layers, heads, length = weights.shape
    cell_w = (PICTURE_INCHES - ATTENTION_LABEL_INCHES) / (heads + 0.3)
    cell_h = float(np.clip(0.075 * length + 0.3, 0.6, 2.4))
    cell_h = min(cell_h, max(0.45, ATTENTION_MAX_INCHES / layers))
    label_every = max(1, math.ceil(TOKEN_LABEL_INCHES * length / (0.8 * cell_h)))
    label_cells = ATTENTION_LABEL_INCHES / cell_w
    title = textwrap.fill(ATTENTION_TITLE, _chars_per_line(0.94 * PICTURE_INCHES, ATTENTION_TITLE_FONT))
    title_inches = 0.45 + 0.17 * (title.count("\n") + 1)
    height = cell_h * layers + 0.2 + title_inches
    figure = Figure(figsize=(PICTURE_INCHES, height), dpi=DPI)
    ax = figure.add_axes((0.0, 0.1 / height, 1.0, cell_h * layers / height))
    ys = np.linspace(0.9, 0.1, length) if length > 1 else np.array([0.5])
    colours = _head_colours(heads)
    segments, rgba, dots = [], [], []
    for layer in range(layers):
        base = layers - 1 - layer
        for head in range(heads):
            left, right = head + 0.12, head + 0.88
            segments.extend(((left, base + y), (right, base + ys[-1])) for y in ys)
            colour = np.tile(colours[head], (length, 1))
            colour[:, 3] = np.clip(weights[layer, head], 0.0, 1.0)
            rgba.append(colour)
            dots.extend((left, base + y) for y in ys)
        ax.text(
            -label_cells + 0.03 / cell_w, base + 0.5, f"L{layer}", fontsize=ATTENTION_LABEL_FONT, ha="left", va="center"
        )
    ax.add_collection(LineCollection(segments, colors=np.concatenate(rgba), linewidths=1.0))
    ax.scatter(*np.array(dots).T, s=1.5, color="0.55", linewidths=0)
    head_labels = range(0, heads, max(1, math.ceil(0.3 / cell_w)))
    for head in head_labels:
        ax.text(head + 0.5, layers + 0.02, f"{head}", fontsize=ATTENTION_LABEL_FONT, ha="center", va="bottom")
    for index in range(0, length, label_every):
        label = _short(_visible(tokens[index]), 8) + (f" #{index}" if label_every > 1 else "")
        ax.text(
            0.06,
            layers - 1 + ys[index],
            label,
            fontsize=ATTENTION_LABEL_FONT,
            ha="right",
            va="center",
            parse_math=False,
        )
    ax.set_xlim(-label_cells, heads + 0.3)
    ax.set_ylim(0, layers)
    ax.set_axis_off()
    figure.text(0.5, 1 - 0.08 / height, title, fontsize=ATTENTION_TITLE_FONT, ha="center", va="top", linespacing=1.3)
    return figure


def _chars_per_line(inches: float, points: float) -> int:
    """About how many characters of DejaVu Sans at `points` fit in `inches` (0.6 em a character)."""
    return max(20, int(inches * 72 / (0.6 * points)))


def _shades(name: str) -> Shade:
    """The colormap from its light end (but never white, so a weak bar stays visible) to its dark end."""
    base = matplotlib.colormaps[name]
    return lambda value: base(0.15 + 0.8 * float(np.clip(value, 0.0, 1.0)))


def _head_colours(heads: int) -> np.ndarray:
    cmap = matplotlib.colormaps["tab10" if heads <= 10 else "tab20"]
    return np.array([cmap(h % cmap.N) for h in range(heads)], dtype=float)


def _visible(token: str) -> str:
    """A token with its spaces and line breaks made visible (and nothing that would reorder it)."""
    return printable(token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥"))


def _fit(text: str, points: float, size: float, weight: str) -> str:
    """`text` cut with "…" until it is at most `points` wide in the picture's font (wide letters
    such as "W" fill a label far sooner than its character count says)."""
    font = FontProperties(size=size, weight=weight)
    while len(text) > 1 and _TEXT_PATHS.get_text_width_height_descent(text, font, ismath=False)[0] > points:
        text = text[:-2] + "…"
    return text


def _short(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png")
    return buffer.getvalue()
