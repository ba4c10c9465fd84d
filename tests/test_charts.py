"""The /why pictures: every piece of text inside the picture, and the bars legible where Discord shows them."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from core.service import WordImportance
from model.explain import charts

DISCORD_IMAGE_WIDTH_PX = 490
"""About how wide Discord shows an embed's image (a newcomer's client: 488 px)."""
SMALLEST_LEGIBLE_PX = 11.0


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


@pytest.mark.parametrize("count", [2, 6, 20, 45])
def test_bars_chart_text_is_legible_at_discords_size_and_inside_the_picture(count: int) -> None:
    figure = charts.importance_figure(words(count), scale=2.5)
    width_px = figure.get_figwidth() * figure.dpi
    columns = -(-count // charts.ROWS_PER_COLUMN)
    assert width_px / columns <= DISCORD_IMAGE_WIDTH_PX + 20  # one column is shown at its own size
    shown = min(1.0, DISCORD_IMAGE_WIDTH_PX / width_px)
    smallest_pt = min(charts.WORD_FONT, charts.SIGMA_FONT, charts.TOKEN_FONT, charts.SUBTITLE_FONT)
    assert smallest_pt * figure.dpi / 72 * shown >= SMALLEST_LEGIBLE_PX or columns > 1
    assert outside_text(figure) == []


@pytest.mark.parametrize(("layers", "heads", "length"), [(1, 1, 3), (2, 2, 6), (4, 4, 15), (12, 12, 15)])
def test_attention_picture_title_and_labels_are_not_clipped(layers: int, heads: int, length: int) -> None:
    weights = np.random.default_rng(0).dirichlet(np.ones(length), size=(layers, heads))
    figure = charts.attention_figure(weights, [f" tok{i}" for i in range(length)])
    assert outside_text(figure) == []
