"""The /why pictures: every piece of text inside the picture, and the bars legible where Discord shows them."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from core.service import WordImportance
from model.explain import charts

DISCORD_IMAGE_WIDTH_PX = 490
"""About how wide Discord shows an embed's image (a newcomer's client: 488 px)."""
SMALLEST_LEGIBLE_PX = 12.0


def words(count: int) -> list[WordImportance]:
    return [WordImportance(f"word{i}", (f" word{i}",), 1.0 + i / 10, 1 - i / count) for i in range(count)]


def outside_text(figure) -> list[str]:
    """The texts drawn partly outside the picture (clipped when saved)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer, box = canvas.get_renderer(), figure.bbox
    texts = figure.findobj(lambda artist: hasattr(artist, "get_text") and hasattr(artist, "get_window_extent"))
    outside = []
    for text in texts:
        if text.get_text() and text.get_visible():
            extent = text.get_window_extent(renderer)
            if not (box.contains(*extent.p0) and box.contains(*extent.p1)):
                outside.append(text.get_text())
    return outside


def texts_of(figure) -> list:
    return [text for text in figure.findobj(lambda artist: hasattr(artist, "get_fontsize")) if text.get_text()]


def assert_legible_where_discord_shows_it(figure) -> None:
    """The picture is no wider than Discord shows it, so it is not shrunk; every text is legible at that size."""
    width_px = figure.get_figwidth() * figure.dpi
    assert width_px <= DISCORD_IMAGE_WIDTH_PX + 10
    shown = min(1.0, DISCORD_IMAGE_WIDTH_PX / width_px)
    smallest = min(text.get_fontsize() for text in texts_of(figure))
    assert smallest * figure.dpi / 72 * shown >= SMALLEST_LEGIBLE_PX, smallest
    assert outside_text(figure) == []


def overlapping(figure) -> list[tuple[str, str]]:
    """Pairs of drawn things (texts, bars) that overlap: a label run into a bar or into another label."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts_of(figure)]
    boxes += [("bar", patch.get_window_extent(renderer)) for ax in figure.axes for patch in ax.patches]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if not (a == b == "bar") and box_a.overlaps(box_b)
    ]


@pytest.mark.parametrize("count", [2, 6, 20, 45, 160])
def test_bars_chart_text_is_legible_at_discords_size_and_inside_the_picture(count: int) -> None:
    figure = charts.importance_figure(words(count), scale=2.5)
    assert_legible_where_discord_shows_it(figure)
    assert figure.get_figheight() * figure.dpi <= 900  # 160 words do not make a strip Discord shrinks


def test_a_long_texts_chart_shows_its_most_important_words_and_says_so() -> None:
    many = words(160)
    figure = charts.importance_figure(many, scale=2.5)
    drawn = {text.get_text().removeprefix("★ ") for text in texts_of(figure)}
    assert {w.word for w in many[: charts.CHART_WORDS]} <= drawn and "word159" not in drawn
    assert "★ word0" in {text.get_text() for text in texts_of(figure)}
    assert any("the 25 most important of 160 words" in text.get_text() for text in texts_of(figure))


def test_the_longest_labels_and_smallest_sigmas_run_into_nothing() -> None:
    crowded = [
        WordImportance("W" * 30, ("W" * 30,), 0.000123, 1.0),
        WordImportance("mmmmmmmmmmmmmmmm", (" mm", "mm", "mmm", "mm"), 2.5, 0.0),
        WordImportance("a", (" a",), 1.25, 0.5),
    ]
    assert overlapping(charts.importance_figure(crowded, scale=2.5)) == []


def test_bidi_controls_are_left_out_of_the_labels() -> None:
    figure = charts.importance_figure([WordImportance("\u202eשלום", ("\u202eשלום",), 1.0, 1.0)], scale=2.5)
    labels = [text.get_text() for text in texts_of(figure)]
    assert "★ שלום" in labels and not any("\u202e" in label or "�" in label for label in labels)


@pytest.mark.parametrize(("layers", "heads", "length"), [(1, 1, 3), (2, 2, 6), (4, 4, 15), (12, 12, 15), (12, 12, 200)])
def test_attention_picture_is_legible_at_discords_size_and_nothing_is_clipped(
    layers: int, heads: int, length: int
) -> None:
    weights = np.random.default_rng(0).dirichlet(np.ones(length), size=(layers, heads))
    figure = charts.attention_figure(weights, [f" tok{i}" for i in range(length)])
    assert_legible_where_discord_shows_it(figure)
    assert figure.get_figheight() * figure.dpi <= 1100
