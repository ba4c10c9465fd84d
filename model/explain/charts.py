"""The `/why` pictures as PNG bytes: word-importance bars and the last position's attention grid.

matplotlib with the headless Agg canvas, drawn on a `Figure` object rather than through pyplot,
so nothing global (the current figure, a GUI backend) is touched from the worker thread.
Prompt text is drawn with `parse_math=False`: a "$5" in a prompt must not start mathtext.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from core.service import WordImportance

ROWS_PER_COLUMN = 40
"""Long prompts wrap into more columns of bars instead of one unreadably tall strip."""
DPI = 110
MAX_LABEL_CHARS = 24
IMPORTANCE_CMAP = "Blues"
"""Darker = more important, as in the source article's figure."""
Shade = Callable[[float], tuple[float, float, float, float]]
TOKEN_LABEL_INCHES = 0.075
"""Least vertical room for one token label in the attention grid; longer prompts label every k-th token."""


def importance_png(words: Sequence[WordImportance], *, scale: float) -> bytes:
    """A horizontal bar per word, in prompt order, longer and darker for more important words.

    Each row carries the word, its bar, σ, and the exact tokens it was made of (␣ = a space that
    belongs to the token); the most important word is starred. All words are drawn, however many.
    """
    columns = max(1, math.ceil(len(words) / ROWS_PER_COLUMN))
    rows = min(len(words), ROWS_PER_COLUMN) or 1
    figure = Figure(figsize=(8.5 * columns, 1.5 + 0.3 * rows), dpi=DPI)
    cmap = _shades(IMPORTANCE_CMAP)
    best = max(range(len(words)), key=lambda i: words[i].importance) if words else -1
    for column in range(columns):
        ax = figure.add_axes((0.02 + column / columns, 0.02, 0.96 / columns, 1 - 1.0 / (1.5 + 0.3 * rows)))
        chunk = range(column * ROWS_PER_COLUMN, min(len(words), (column + 1) * ROWS_PER_COLUMN))
        _draw_bar_column(ax, words, chunk, best, cmap, rows)
    figure.suptitle(
        f"Which words drive the next word\nlonger, darker bar = more important; σ = noise the word "
        f"tolerates (at most {scale:.2g}), smaller = more important\ngrey: the word's tokens "
        "(␣ = a space that is part of the token)",
        fontsize=8.5,
        x=0.02,
        ha="left",
        linespacing=1.4,
    )
    return _png(figure)


def _draw_bar_column(ax, words: Sequence[WordImportance], chunk: range, best: int, cmap: Shade, rows: int) -> None:
    label_x, bar_x, bar_w = 0.0, 0.30, 0.40
    ys = [rows - 1 - row for row in range(len(chunk))]
    levels = [words[index].importance for index in chunk]
    ax.barh(
        ys,
        [max(level, 0.004) * bar_w for level in levels],
        left=bar_x,
        height=0.7,
        color=[cmap(level) for level in levels],
        edgecolor="0.6",
        linewidth=0.4,
    )
    for y, index in zip(ys, chunk, strict=True):
        word = words[index]
        mark = "★ " if index == best else ""
        ax.text(
            label_x,
            y,
            mark + _short(word.word),
            va="center",
            ha="left",
            fontsize=9,
            parse_math=False,
            fontweight="bold" if index == best else "normal",
        )
        ax.text(bar_x + bar_w + 0.01, y, f"σ={word.sigma:.3g}", va="center", ha="left", fontsize=8, parse_math=False)
        pieces = "·".join(_visible(t) for t in word.tokens)
        ax.text(
            bar_x + bar_w + 0.12,
            y,
            _short(pieces, 2 * MAX_LABEL_CHARS),
            va="center",
            ha="left",
            fontsize=7,
            color="0.4",
            parse_math=False,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, rows - 0.4)
    ax.set_axis_off()


def attention_png(weights: np.ndarray, tokens: Sequence[str]) -> bytes:
    """A layers × heads grid like BertViz's model view, for the last query position only.

    In each cell, the prompt's tokens run top to bottom on the left and the last position sits on
    the right; a line joins them with an opacity equal to the attention weight. All cells are drawn
    on one Axes with one LineCollection: 144 separate Axes (GPT-2 small) take seconds to draw.
    """
    layers, heads, length = weights.shape
    cell_w, cell_h = 0.9, float(np.clip(0.075 * length + 0.3, 0.9, 2.4))
    label_every = max(1, math.ceil(TOKEN_LABEL_INCHES * length / (0.8 * cell_h)))
    label_cells = 1.6
    width, height = cell_w * (heads + label_cells + 0.5), cell_h * layers + 0.9
    figure = Figure(figsize=(width, height), dpi=DPI)
    ax = figure.add_axes((0.0, 0.0, 1.0, 1 - 0.5 / height))
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
        ax.text(-label_cells + 0.05, base + 0.5, f"layer {layer}", fontsize=7, ha="left", va="center", rotation=90)
    ax.add_collection(LineCollection(segments, colors=np.concatenate(rgba), linewidths=1.0))
    ax.scatter(*np.array(dots).T, s=1.5, color="0.55", linewidths=0)
    for head in range(heads):
        ax.text(head + 0.5, layers + 0.02, f"head {head}", fontsize=7, ha="center", va="bottom")
    for index in range(0, length, label_every):
        label = _short(_visible(tokens[index]), 14) + (f" #{index}" if label_every > 1 else "")
        ax.text(0.06, layers - 1 + ys[index], label, fontsize=5.5, ha="right", va="center", parse_math=False)
    ax.set_xlim(-label_cells, heads + 0.5)
    ax.set_ylim(0, layers + 0.3)
    ax.set_axis_off()
    figure.suptitle(
        "Attention of the last position (right of each cell) to each prompt token (left, top to "
        "bottom, labelled in the first row)\nper layer (rows) and head (columns); darker line = more "
        "attention",
        fontsize=8,
    )
    return _png(figure)


def _shades(name: str) -> Shade:
    """The colormap from its light end (but never white, so a weak bar stays visible) to its dark end."""
    base = matplotlib.colormaps[name]
    return lambda value: base(0.15 + 0.8 * float(np.clip(value, 0.0, 1.0)))


def _head_colours(heads: int) -> np.ndarray:
    cmap = matplotlib.colormaps["tab10" if heads <= 10 else "tab20"]
    return np.array([cmap(h % cmap.N) for h in range(heads)], dtype=float)


def _visible(token: str) -> str:
    """A token with its spaces and line breaks made visible."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def _short(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png")
    return buffer.getvalue()
