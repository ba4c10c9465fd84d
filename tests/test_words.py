"""Grouping BPE pieces into the words the user typed, and combining σ per word (model/words.py)."""

from __future__ import annotations

import math

import pytest

from model.explain.words import group_tokens, importances, word_sigma


def _texts(prompt: str, offsets: list[tuple[int, int]]) -> list[tuple[str, tuple[int, ...]]]:
    return [(w.text, w.token_indices) for w in group_tokens(prompt, offsets)]


def test_leading_space_piece_belongs_to_the_word_it_precedes() -> None:
    """GPT-2 glues the space onto the next word's first piece; that piece goes with that word."""
    assert _texts("The king", [(0, 3), (3, 8)]) == [("The", (0,)), ("king", (1,))]


def test_trimmed_offsets_group_the_same_way() -> None:
    """Tokenizers that trim the space from offsets give the same words."""
    assert _texts("The king", [(0, 3), (4, 8)]) == [("The", (0,)), ("king", (1,))]


def test_pieces_of_one_word_and_its_punctuation_form_one_word() -> None:
    """A word is what the user typed between spaces: "Holmes," is one word of three pieces."""
    assert _texts("Holmes, said", [(0, 4), (4, 6), (6, 7), (7, 12)]) == [("Holmes,", (0, 1, 2)), ("said", (3,))]


def test_whitespace_only_token_joins_the_next_word() -> None:
    """A run of newlines is its own token; it is attached to the word after it."""
    assert _texts("a\n\nb", [(0, 1), (1, 3), (3, 4)]) == [("a", (0,)), ("b", (1, 2))]


def test_trailing_whitespace_token_joins_the_last_word() -> None:
    """Whitespace after the last word has no next word, so it joins the last one."""
    assert _texts("a b ", [(0, 1), (1, 3), (3, 4)]) == [("a", (0,)), ("b", (1, 2))]


def test_character_split_across_tokens_stays_in_its_word() -> None:
    """Byte-level BPE can split an emoji into two tokens with the same offsets; both join its word."""
    assert _texts("hi 🦊!", [(0, 2), (2, 4), (3, 4), (4, 5)]) == [("hi", (0,)), ("🦊!", (1, 2, 3))]


def test_whitespace_only_prompt_has_no_words() -> None:
    """Nothing but spaces gives no words (the caller refuses such a prompt before)."""
    assert group_tokens("   ", [(0, 3)]) == []


@pytest.mark.parametrize(
    "prompt",
    [
        "Once upon a time there lived a king who had three daughters.",
        '  The fox said:\n\n"What a fine voice you have!"  ',
        "Holmes looked at the letter; then—he smiled. 🦊 ünïcödé",
    ],
)
def test_real_tokenizer_every_token_in_exactly_one_word(tiny_loaded, prompt: str) -> None:
    """With the real (tiny) byte-level BPE, every token lands in exactly one word and words match the text."""
    encoded = tiny_loaded.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    words = group_tokens(prompt, [tuple(o) for o in encoded["offset_mapping"]])
    assigned = sorted(i for w in words for i in w.token_indices)
    assert assigned == list(range(len(encoded["input_ids"])))
    assert [w.text for w in words] == prompt.split()


def test_word_sigma_is_the_smallest_piece_sigma() -> None:
    """A word is as sensitive as its most sensitive piece."""
    assert word_sigma([0.9, 0.2, 0.7]) == 0.2
    with pytest.raises(ValueError):
        word_sigma([])


def test_importances_run_from_one_at_smallest_sigma_to_zero_at_scale() -> None:
    """Smallest σ → 1, σ equal to the scale → 0, and importance falls as σ grows (log scale)."""
    levels = importances([0.01, 0.1, 1.0, 0.5], scale=1.0)
    assert levels[0] == 1.0 and levels[2] == 0.0
    assert math.isclose(levels[1], 0.5)
    assert levels[0] > levels[1] > levels[3] > levels[2]


def test_importances_when_all_sigmas_equal_scale_are_all_one() -> None:
    """No contrast at all (every word at the noise ceiling): every word shows the same full bar."""
    assert importances([1.0, 1.0], scale=1.0) == [1.0, 1.0]
    assert importances([], scale=1.0) == []
