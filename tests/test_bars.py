"""Text bars shared by the terminal and the Discord cog (model/bars.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.bars import FULL, MARK, bar, display_width, most_important, pad, render_bars, render_predictions
from core.service import WordImportance


def _word(text: str, importance: float, sigma: float = 0.5) -> WordImportance:
    return WordImportance(word=text, tokens=(" " + text,), sigma=sigma, importance=importance)


def _filled_eighths(text: str) -> int:
    return sum(8 if c == FULL else " ▏▎▍▌▋▊▉".index(c) for c in text if c in " ▏▎▍▌▋▊▉█")


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, "    "), (1.0, "████"), (0.5, "██  "), (0.53125, "██▏ ")])
def test_bar_length_in_eighths_of_a_cell(fraction: float, expected: str) -> None:
    """A bar fills fraction × width cells, in eighths, padded to the full width."""
    assert bar(fraction, 4) == expected


def test_bar_shows_a_sliver_for_any_nonzero_fraction() -> None:
    """A little importance never looks like none."""
    assert bar(0.001, 10) == "▏" + " " * 9


def test_render_bars_one_aligned_line_per_word_with_longer_bars_for_more_important_words() -> None:
    """Lines are in prompt order, σ columns line up, and bar length grows with importance."""
    words = [_word("Once", 0.2), _word("upon", 1.0, 0.01), _word("a", 0.0, 1.0), _word("time", 0.6)]
    lines = render_bars(words, width=16)
    assert len(lines) == 4
    assert [line.split()[0] for line in lines] == ["Once", "upon", "a", "time"]
    assert len({line.index("σ") for line in lines}) == 1
    eighths = [_filled_eighths(line[5 : 5 + 16]) for line in lines]
    assert eighths == [round(w.importance * 16 * 8) for w in words]


def test_render_bars_marks_only_the_most_important_word() -> None:
    """Exactly one line carries the mark: the word with importance 1."""
    lines = render_bars([_word("a", 0.3), _word("b", 1.0), _word("c", 0.9)], width=10)
    assert [MARK in line for line in lines] == [False, True, False]


def test_render_bars_cuts_long_words_and_counts_wide_characters_as_two_columns() -> None:
    """A long word is cut with an ellipsis; CJK characters take two columns, so σ still lines up."""
    lines = render_bars(
        [_word("extraordinarily-long-word", 1.0), _word("王子", 0.5), _word("ok", 0.1)], width=8, word_width=10
    )
    assert lines[0].startswith("extraordi… ")
    assert len({display_width(line[: line.index("σ")]) for line in lines}) == 1


def test_render_bars_drops_bidi_controls_and_marks_control_characters() -> None:
    """A direction override cannot reorder the line, and is not shown as a stray �; a control
    character (which should never reach here) is shown as one."""
    (line,) = render_bars([_word("\u202eשלום", 1.0)], width=4)
    assert line.startswith("שלום ") and "\u202e" not in line and "�" not in line
    (line,) = render_bars([_word("evil\x07word", 1.0)], width=4)
    assert line.startswith("evil�word")


def test_most_important_keeps_the_best_words_in_prompt_order() -> None:
    words = [_word(name, importance) for name, importance in [("a", 0.1), ("b", 1.0), ("c", 0.5), ("d", 0.7)]]
    assert most_important(words, 2) == [1, 3]
    assert most_important(words, 10) == [0, 1, 2, 3] and most_important([], 3) == []


def test_render_bars_of_no_words_is_empty() -> None:
    assert render_bars([], width=10) == []


def test_pad_gives_exact_display_width() -> None:
    """Padding and cutting give exactly the asked width, wide characters included."""
    for text in ["a", "王子様の城", "x" * 30, ""]:
        assert display_width(pad(text, 7)) == 7


def test_render_predictions_shows_visible_spaces_and_percentages() -> None:
    """Predicted tokens show their leading space as ␣ and a probability in percent."""
    lines = render_predictions([(" king", 0.4213), ("\n", 0.05)], width=10)
    assert lines[0].startswith("'␣king'") and lines[0].endswith("42.1%")
    assert lines[1].startswith("'↵'") and lines[1].endswith("5.0%")


def test_bars_module_does_not_import_torch() -> None:
    """The cogs import core.bars, and cogs must never pull in torch."""
    code = "import sys, core.bars; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=__file__.rsplit("/tests/", 1)[0]
    )
    assert out.stdout.strip() == "False"
