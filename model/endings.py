"""Where a story may start and stop: at word and sentence boundaries.

Two things read badly in a generated story: a first token glued onto the prompt's last word
("the crow" + "ing" → "the crowing", "his wife" + "'s palace"), and a story cut at its token
budget in the middle of a word or sentence. Both are fixed here, per row and per step, so they
work the same in the continuous batch, the static batch and beam search:

- The prompt is taken as whole words. When it ends in a letter or digit, the first token must
  not begin with one (nor with an apostrophe or hyphen that joins a word): it starts a new word
  or is punctuation. transformers' own `token_healing` was evaluated and not used: it rewrites
  the prompt's last token by a biased greedy `generate` call of its own per row (so "crow" may
  become "crowd": the user's words change), outside the seeded batch, re-tokenising stripped
  prompts; and the service's continuous batch does not call `generate` at all.
- A row that reaches its length runs on for a small margin until its text ends a sentence and
  stops before the next word. If no sentence has ended when the margin is spent, the next token
  is chosen (by the row's own strategy, among what the model proposes) from the tokens that end
  a sentence (".", "!", "?", with closing quotes), and the row ends there: every story that ends
  at its length ends a sentence, for any model and any strategy, beam search included. The token
  that would start the next word is never shown, so streamed text needs no trim. A row whose text
  ends in a letter may be inside a word (a 512-token vocabulary writes "prin" + "cess"), so for a
  few tokens (`WORD_GRACE`) it may also take a token that continues that word: "the prin!" becomes
  "the princess." (measured on the shipped model: 2 of 5 stories had ended inside a word).

What this does not cover: a story the model ends itself (its end-of-text token), one stopped by
its user or its time limit, a vocabulary with no sentence-ending token, and a prompt so long that
the story reaches the end of the model's context before its margin is spent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s*$")
CLOSER = re.compile(r"[.!?]+[\"'”’)\]]*")
"""A token that ends a sentence and nothing else: what a row out of margin must choose."""
CLOSING_MARKS = re.compile(r"[\"'”’)\]]+")
"""A token of closing quotes or brackets only: it still belongs to the sentence that just ended."""
NO_LIMIT = 1 << 30
WORD_GRACE = 6
"""Tokens past the margin in which a row out of margin may still finish the word it is in."""
GLUE = re.compile(r"^([A-Za-z0-9À-ÿ]|['’-][A-Za-z])")
WORD_END = re.compile(r"[A-Za-z0-9À-ÿ]$")


@dataclass(frozen=True)
class EndingRules:
    """Which of the two rules a story follows (the service takes them from its config)."""

    whole_words: bool = True
    finish_sentences: bool = True


OFF = EndingRules(whole_words=False, finish_sentences=False)
"""Token-exact lengths and no first-token rule: what `generate` itself does."""


def margin(max_new_tokens: int) -> int:
    """Extra tokens a row may take to finish its sentence: a quarter of its length, 8 to 40."""
    return min(40, max(8, max_new_tokens // 4))


def sentence_ended(text: str) -> bool:
    return bool(SENTENCE_END.search(text))


def closing_step(max_new_tokens: int, room: int = NO_LIMIT) -> int:
    """How many tokens a row may have before its next token must end its sentence: its length plus
    the margin, within the model's context (`room` tokens after the prompt)."""
    return max(max_new_tokens, min(max_new_tokens + margin(max_new_tokens), room - 1))


@dataclass(frozen=True)
class Boundaries:
    """Per-token facts about a vocabulary, computed once per tokenizer."""

    glues: torch.Tensor
    """True where a token's text would continue the word before it."""
    starts_word: list[bool]
    """True where a token's text begins with whitespace: a new word (or line) starts."""
    closers: torch.Tensor
    """True where a token's text ends a sentence and is nothing else ("." "!" "?" '."')."""
    closing_marks: list[bool]
    """True where a token's text is closing quotes or brackets only."""

    @classmethod
    def of(cls, tokenizer, device: torch.device | str = "cpu") -> Boundaries:
        # Each token is decoded after a reference word, so tokenizers that put spaces between
        # tokens when decoding (word-level ones) say so as byte-level BPE does with its "Ġ".
        reference = tokenizer("a", add_special_tokens=False)["input_ids"][:1] or [0]
        prefix = tokenizer.decode(reference, clean_up_tokenization_spaces=False)
        pairs = tokenizer.batch_decode(
            [[*reference, i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False
        )
        texts = [pair[len(prefix) :] if pair.startswith(prefix) else pair for pair in pairs]
        special = set(tokenizer.all_special_ids)
        return cls(
            glues=torch.tensor([bool(GLUE.match(t)) for t in texts], dtype=torch.bool, device=device),
            starts_word=[t[:1].isspace() for t in texts],
            closers=torch.tensor(
                [i not in special and bool(CLOSER.fullmatch(t)) for i, t in enumerate(texts)],
                dtype=torch.bool,
                device=device,
            ),
            closing_marks=[bool(CLOSING_MARKS.fullmatch(t)) for t in texts],
        )

    @property
    def can_close(self) -> bool:
        """Whether the vocabulary has a token that ends a sentence (every real one has ".")."""
        return bool(self.closers.any())

    def ban_glue(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` (rows, vocab) with word-continuing tokens made impossible, in place."""
        width = min(scores.shape[-1], self.glues.shape[0])
        scores[..., :width].masked_fill_(self.glues[:width].to(scores.device), float("-inf"))
        return scores

    def ends_before(self, token: int, text: str, generated: int, max_new_tokens: int, room: int = NO_LIMIT) -> bool:
        """A row past its length ends before `token` when the text so far ends a sentence and that
        token starts a new word; once the margin is spent, whenever the text ends a sentence
        (unless `token` only closes its quotes)."""
        if generated < max_new_tokens:
            return False
        if generated >= max_new_tokens + 2 * margin(max_new_tokens):
            return True  # no sentence-ending token in this vocabulary, and a word that never ends
        ended = sentence_ended(text)
        if generated >= closing_step(max_new_tokens, room):
            marks = token < len(self.closing_marks) and self.closing_marks[token]
            return (ended and not marks) or (not self.can_close and self._starts_word(token))
        return ended and self._starts_word(token)

    def must_close(self, text: str, generated: int, max_new_tokens: int, room: int = NO_LIMIT) -> bool:
        """Whether the next token must end the sentence: the margin is spent and it has not ended."""
        return generated >= closing_step(max_new_tokens, room) and self.can_close and not sentence_ended(text)

    def may_finish_word(self, text: str, generated: int, max_new_tokens: int, room: int = NO_LIMIT) -> bool:
        """Whether a row that must close may still continue the word its text ends in."""
        limit = min(closing_step(max_new_tokens, room) + WORD_GRACE, room - 2)
        return generated < limit and bool(WORD_END.search(text))

    def close(self, scores: torch.Tensor, finish_word: bool = False) -> torch.Tensor:
        """`scores` (rows, vocab) with every token that does not end a sentence made impossible, in
        place (`finish_word`: tokens that continue the current word stay possible too). A row whose
        repetition rules had already ruled out every such token gets the enders back, equally
        likely: ending the sentence comes first."""
        width = min(scores.shape[-1], self.closers.shape[0])
        closers = self.closers[:width].to(scores.device)
        allowed = closers | self.glues[:width].to(scores.device) if finish_word else closers
        scores[..., width:] = float("-inf")
        scores[..., :width].masked_fill_(~allowed, float("-inf"))
        blocked = ~torch.isfinite(scores[..., :width]).any(dim=-1)
        if blocked.any():
            scores[blocked, :width] = torch.where(closers, 0.0, float("-inf"))
        return scores

    def cut(self, tokens: list[int], decode, max_new_tokens: int, room: int = NO_LIMIT) -> list[int]:
        """For beam search, whose text is whole at the end: the same cut, applied afterwards."""
        for index in range(max_new_tokens, len(tokens)):
            if self.ends_before(tokens[index], decode(tokens[:index]), index, max_new_tokens, room):
                return tokens[:index]
        return tokens

    def _starts_word(self, token: int) -> bool:
        return token < len(self.starts_word) and self.starts_word[token]


def prompt_ends_word(prompt: str) -> bool:
    """The prompt's last character is part of a word: the story must not glue onto it."""
    return bool(WORD_END.search(prompt))


def boundaries_for(tokenizer) -> Boundaries:
    """`Boundaries.of(tokenizer)`, kept on the tokenizer: it decodes the whole vocabulary once."""
    found = getattr(tokenizer, "_taleweaver_boundaries", None)
    if found is None:
        found = Boundaries.of(tokenizer)
        tokenizer._taleweaver_boundaries = found
    return found
