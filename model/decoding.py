"""From `DecodingSettings` to what `generate` takes: a `GenerationConfig` and logits processors.

Sampling is done by `SeededSampling`, a logits processor with one `torch.Generator` per row,
instead of `generate`'s own `torch.multinomial` on the global generator. That is what lets
several users' requests share one batch while each keeps its own seed: a row draws the same
random numbers whether it runs alone or beside others, so batching does not change its story.
Per-row temperature, top-k and top-p reuse Hugging Face's own warpers, one set per row.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from model.settings import DecodingSettings


def to_generation_config(settings: DecodingSettings, *, eos_token_id: int, pad_token_id: int,
                         native_sampling: bool = False) -> GenerationConfig:
    """The `GenerationConfig` of one request.

    With `native_sampling`, sampling settings map onto `generate`'s own sampler (`do_sample`,
    `temperature`, `top_k`, `top_p`) — the plain Hugging Face way, used for comparison. Without
    it (the service's way), sampling runs greedy search over the output of `SeededSampling`.
    Processors are set only when a setting is not at its neutral value.
    """
    common = dict(
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        repetition_penalty=settings.repetition_penalty if settings.repetition_penalty != 1.0 else None,
        no_repeat_ngram_size=settings.no_repeat_ngram_size or None,
    )
    if settings.strategy == "beam":
        return GenerationConfig(num_beams=settings.num_beams, do_sample=False, early_stopping=True, **common)
    if settings.strategy == "sampling" and native_sampling:
        return GenerationConfig(do_sample=True, temperature=settings.temperature, top_k=settings.top_k or None,
                                top_p=settings.top_p if settings.top_p < 1.0 else None, **common)
    return GenerationConfig(do_sample=False, **common)


def batch_key(settings: DecodingSettings) -> Hashable:
    """Requests with equal keys can share one `generate` call.

    Beam search runs a different search per beam count and length; the repetition controls are batch-wide
    processors in `generate`. Greedy and sampling rows mix freely (see `SeededSampling`).
    """
    # A beam batch ends together (finished beams wait for the rest), so its lengths must match.
    search = ("beam", settings.num_beams, settings.max_new_tokens) if settings.strategy == "beam" else ("token",)
    return (*search, settings.repetition_penalty, settings.no_repeat_ngram_size)


def row_warpers(settings: DecodingSettings) -> LogitsProcessorList:
    """Hugging Face's warpers for one sampling row, in `generate`'s order, neutral ones left out."""
    warpers = LogitsProcessorList()
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        warpers.append(TopKLogitsWarper(top_k=settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=settings.top_p))
    return warpers


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token from `probs` by inverting the cumulative distribution with a single uniform draw.

    Equivalent in distribution to `torch.multinomial(probs, 1)`, which on the CPU draws one
    random number per vocabulary entry (1–2 ms a row at GPT-2's 50k tokens); this draws one.
    Zero-probability tokens own an empty interval of the CDF, so they are never picked.
    """
    cdf = probs.cumsum(0)
    u = torch.rand(1, generator=generator, device=probs.device, dtype=cdf.dtype)
    return torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=probs.numel() - 1)


class SeededSampling(LogitsProcessor):
    """Per-row sampling with per-row seeds and settings; greedy rows pass through unchanged.

    For a sampling row the scores become -inf everywhere but at the drawn token, so the greedy
    `argmax` that `generate` applies afterwards picks exactly that token.
    """

    def __init__(self, rows: Sequence[tuple[DecodingSettings, int]], device: torch.device) -> None:
        self.rows: list[tuple[LogitsProcessorList, torch.Generator] | None] = []
        for settings, seed in rows:
            if settings.strategy != "sampling":
                self.rows.append(None)
                continue
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
            self.rows.append((row_warpers(settings), generator))

    @property
    def active(self) -> bool:
        return any(row is not None for row in self.rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for index, row in enumerate(self.rows):
            if row is None:
                continue
            warpers, generator = row
            row_scores = warpers(input_ids[index : index + 1], scores[index : index + 1].float())
            token = _draw(torch.softmax(row_scores[0], dim=-1), generator)
            chosen = torch.full_like(scores[index], float("-inf"))
            chosen[token] = 0.0
            scores[index] = chosen
        return scores
