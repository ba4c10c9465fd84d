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


def _draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of `probs` (R, V), by inverting each row's CDF with one uniform draw.

    Equivalent in distribution to `torch.multinomial(probs, 1)`, which on the CPU draws one
    random number per vocabulary entry (1–2 ms a row at GPT-2's 50k tokens); this draws one per
    row, from that row's own generator, so a row's draw does not depend on its neighbours.
    Zero-probability tokens own an empty interval of the CDF, so they are never picked.
    """
    cdf = probs.cumsum(dim=-1)
    u = torch.cat([torch.rand(1, generator=g, device=probs.device, dtype=cdf.dtype) for g in generators])
    tokens = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True)
    return tokens.clamp_(max=probs.shape[-1] - 1).squeeze(-1)


class SeededSampling(LogitsProcessor):
    """Per-row sampling with per-row seeds and settings; greedy rows pass through unchanged.

    Rows with the same temperature, top-k and top-p (the usual case: most users keep the
    defaults) go through Hugging Face's warpers, the softmax and the CDF together, as one
    tensor: every one of those operations works row by row, so a row's numbers are the ones it
    would get alone, and per-row Python work is one random draw.

    For a sampling row the scores become -inf everywhere but at the drawn token, so the greedy
    `argmax` that `generate` applies afterwards picks exactly that token.
    """

    def __init__(self, rows: Sequence[tuple[DecodingSettings, int]], device: torch.device) -> None:
        self.groups: list[tuple[torch.Tensor, LogitsProcessorList, list[torch.Generator]]] = []
        grouped: dict[tuple[float, int, float], list[tuple[int, int]]] = {}
        for index, (settings, seed) in enumerate(rows):
            if settings.strategy == "sampling":
                key = (settings.temperature, settings.top_k, settings.top_p)
                grouped.setdefault(key, []).append((index, seed))
        for members in grouped.values():
            settings = rows[members[0][0]][0]
            generators = [torch.Generator(device=device).manual_seed(seed) for _, seed in members]
            indices = torch.tensor([index for index, _ in members], device=device)
            self.groups.append((indices, row_warpers(settings), generators))

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for indices, warpers, generators in self.groups:
            warped = warpers(input_ids[indices], scores[indices].float())
            tokens = _draw(torch.softmax(warped, dim=-1), generators)
            chosen = torch.full_like(warped, float("-inf")).to(scores.dtype)
            chosen[torch.arange(len(indices), device=scores.device), tokens] = 0.0
            scores[indices] = chosen
        return scores
