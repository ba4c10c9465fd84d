"""Finding where one story ends and the next begins in text that does not mark it.

The lower-cased TinyStories file puts a blank line between paragraphs and a single line break
between stories, but some stories also break their paragraphs with single line breaks. So a
single line break with text right on both sides is a *candidate* boundary, and the teacher model
decides: it was trained with a start-of-story token before every story, so it says whether the
text after the break reads more like a new story (the token, then the text) or like the same
story's next paragraph (a line break, then the text). No threshold is fitted: the more probable
reading wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model.training.perplexity import context_length

CANDIDATE = re.compile(r"(?<=\S)\n(?=\S)")
CONTEXT_CHARS = 400
CONTINUATION_CHARS = 100


def candidate_chunks(text: str) -> list[str]:
    """The text cut at every candidate boundary; paragraphs inside a chunk on single lines."""
    chunks = []
    for chunk in CANDIDATE.split(text):
        lines = [line.strip() for line in chunk.split("\n")]
        chunk = "\n".join(line for line in lines if line)
        if chunk:
            chunks.append(chunk)
    return chunks


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.find(" ", len(text) - limit)
    return text[cut + 1 :] if cut >= 0 else text[-limit:]


def _head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut] if cut > 0 else text[:limit]


@dataclass(frozen=True)
class _Reading:
    ids: list[int]
    scored_from: int
    """Index of the first token whose probability counts (the break and what follows it)."""


def _readings(
    tokenizer: PreTrainedTokenizerBase, before: str, after: str, separator_id: int, limit: int
) -> tuple[_Reading, _Reading]:
    """Both readings of the text around a break, each at most `limit` tokens (the context is cut)."""
    context, continuation = _tail(before, CONTEXT_CHARS), _head(after, CONTINUATION_CHARS)
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    new_story = context_ids + [separator_id] + tokenizer(continuation, add_special_tokens=False)["input_ids"]
    # One text, as the teacher read a story: the break is a byte token that no merge crosses.
    same_story = tokenizer(context + "\n" + continuation, add_special_tokens=False)["input_ids"]
    if same_story[: len(context_ids)] != context_ids:
        raise ValueError("the context tokenises differently before a line break")
    cut = max(0, len(new_story) - limit, len(same_story) - limit)
    cut = min(cut, len(context_ids) - 1)
    n = len(context_ids) - cut
    return _Reading(new_story[cut:][:limit], n), _Reading(same_story[cut:][:limit], n)


@torch.inference_mode()
def _log_probs(model: PreTrainedModel, readings: Sequence[_Reading], pad_id: int) -> list[float]:
    """log P(tokens[scored_from:] | tokens[:scored_from]) for each reading, in one padded batch."""
    width = max(len(r.ids) for r in readings)
    ids = torch.full((len(readings), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, reading in enumerate(readings):
        ids[row, : len(reading.ids)] = torch.tensor(reading.ids)
        mask[row, : len(reading.ids)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    out = []
    for row, reading in enumerate(readings):
        out.append(float(log_probs[row, reading.scored_from - 1 : len(reading.ids) - 1].sum()))
    return out


def story_margins(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chunks: Sequence[str],
    separator_id: int,
    batch_size: int = 64,
) -> list[float]:
    """For each pair of neighbouring chunks, log P(new story) − log P(same story) of the text after the break."""
    margins: list[float] = []
    limit = context_length(model.config)
    pairs = list(zip(chunks, chunks[1:]))
    for start in range(0, len(pairs), batch_size // 2):
        readings: list[_Reading] = []
        for before, after in pairs[start : start + batch_size // 2]:
            readings.extend(_readings(tokenizer, before, after, separator_id, limit))
        scores = _log_probs(model, readings, separator_id)
        margins.extend(scores[i] - scores[i + 1] for i in range(0, len(scores), 2))
    return margins


def join_stories(chunks: Sequence[str], breaks: Sequence[bool]) -> list[str]:
    """Chunks joined into stories: a chunk that does not start a story is the last one's next paragraph."""
    if not chunks:
        return []
    stories = [chunks[0]]
    for chunk, new_story in zip(chunks[1:], breaks):
        if new_story:
            stories.append(chunk)
        else:
            stories[-1] += "\n" + chunk
    return stories
