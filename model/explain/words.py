"""Grouping a prompt's BPE pieces back into the words the user typed, and combining their σ.

Pure Python (no torch): it works on character offsets, so the cogs and tests can use it freely.

A *word* is a maximal run of non-whitespace characters of the prompt, exactly as typed
("forest," is one word, as is "Holmes's"). Each token is assigned to the word holding its first
non-whitespace character. GPT-2's byte-level BPE glues the space before a word onto that word's
first piece (" king"), so the space goes with the word it precedes; tokens made only of
whitespace (a run of newlines, trailing spaces) join the next word, or the last word when none
follows. Byte-level BPE may split one character (an emoji) across two tokens with the same
offsets; both then join that character's word.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Word:
    """One word of the prompt: its text, character span and the indices of its tokens."""

    text: str
    start: int
    end: int
    token_indices: tuple[int, ...]


def group_tokens(prompt: str, offsets: Sequence[tuple[int, int]]) -> list[Word]:
    """Assign each token (given by its character span in `prompt`) to a word of the prompt.

    Every token belongs to exactly one word and every returned word has at least one token;
    a word with no token of its own (impossible with a tokenizer that covers the text) is
    dropped rather than shown with a made-up σ.
    """
    spans = [(m.start(), m.end()) for m in _WORD.finditer(prompt)]
    if not spans:
        return []
    members: list[list[int]] = [[] for _ in spans]
    for index, (start, end) in enumerate(offsets):
        members[_word_of(prompt, spans, start, end)].append(index)
    return [Word(prompt[s:e], s, e, tuple(m)) for (s, e), m in zip(spans, members) if m]


def _word_of(prompt: str, spans: list[tuple[int, int]], start: int, end: int) -> int:
    first_visible = next((i for i in range(start, max(end, start)) if not prompt[i].isspace()), None)
    anchor = end if first_visible is None else first_visible
    for index, (word_start, word_end) in enumerate(spans):
        if first_visible is not None and word_start <= anchor < word_end:
            return index
        if first_visible is None and word_start >= anchor:
            return index
    return len(spans) - 1


def word_sigma(token_sigmas: Sequence[float]) -> float:
    """σ of a word: the smallest σ among its pieces.

    Why the minimum: σ_i is how much noise piece i tolerates before the prediction moves, so a
    word is as sensitive as its most sensitive piece: if any piece cannot be blurred, neither can
    the word. The alternatives carry a bias that the minimum avoids. The mean (or the geometric
    mean, which is what summing the paper's per-piece entropies log σ_i gives) pulls a word toward
    its continuation pieces ("Holm" + "es": once "Holm" is there, "es" is nearly determined and
    tolerates much noise), so a word would look less important merely because the tokenizer
    split it into more pieces, i.e. because it is rare. The minimum does not depend on how many
    pieces a word has, and for a one-piece word it is that piece's σ, the published quantity.
    """
    if not token_sigmas:
        raise ValueError("a word has at least one token")
    return min(token_sigmas)


def importances(sigmas: Sequence[float], scale: float) -> list[float]:
    """Map σ values to 0–1 importances: 1 for the smallest σ, 0 for σ = `scale` (pure noise).

    On a log scale, because σ is a noise level and the paper's information loss is log σ:
    a word that tolerates half the noise of another is a step more important whatever the
    absolute level. Anchoring 0 at `scale` (the most noise the method can assign, which means
    "the prediction ignores this word") rather than at the prompt's largest σ keeps a prompt in
    which every word matters from showing a word with no bar at all.
    """
    if not sigmas:
        return []
    floor = 1e-30
    span = math.log(scale / max(min(sigmas), floor))
    if not span > 1e-9:
        return [1.0 for _ in sigmas]
    return [min(1.0, max(0.0, math.log(scale / max(s, floor)) / span)) for s in sigmas]
