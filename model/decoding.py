"""From `DecodingSettings` to what `generate` takes: a `GenerationConfig` and logits processors.

Sampling is done by `SeededSampling`, a logits processor with one `torch.Generator` per row,
instead of `generate`'s own `torch.multinomial` on the global generator. That is what lets
several users' requests share one batch while each keeps its own seed: a row draws the same
random numbers whether it runs alone or beside others, so batching does not change its story.
Per-row temperature, top-k and top-p reuse Hugging Face's own warpers, one set per row.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from core.settings import DecodingSettings
from model.topk import topk


def to_generation_config(
    settings: DecodingSettings, *, eos_token_id: int, pad_token_id: int, native_sampling: bool = False
) -> GenerationConfig:
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
        return GenerationConfig(
            do_sample=True,
            temperature=settings.temperature,
            top_k=settings.top_k,  # 0 turns top-k off; None would let `generate` fill in its default 50
            top_p=settings.top_p if settings.top_p < 1.0 else None,
            **common,
        )
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


@functools.lru_cache(maxsize=256)
def _warper_chain(temperature: float, top_k: int, top_p: float) -> tuple[LogitsProcessor, ...]:
    """`row_warpers` of these settings, made once (the warpers keep no state between calls)."""
    return tuple(row_warpers(DecodingSettings(temperature=temperature, top_k=top_k, top_p=top_p)))


def _warp(chain: tuple[LogitsProcessor, ...], input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
    """The warpers applied in order: what `LogitsProcessorList` does, without the `inspect.signature`
    of every processor it takes on every call (a third of a one-row sampling step's Python time)."""
    for warper in chain:
        scores = warper(input_ids, scores)
    return scores


NUCLEUS_CANDIDATES = 256
"""Nucleus sampling without top-k first looks for the nucleus among this many likeliest tokens."""


def _draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One index per row of `probs` (R, N), by inverting each row's CDF with one uniform draw.

    Equivalent in distribution to `torch.multinomial(probs, 1)`, which on the CPU draws one
    random number per entry of the vocabulary; this draws one per row,
    from that row's own generator, so a row's draw does not depend on its neighbours.
    Zero-probability entries own an empty interval of the CDF, so they are never picked.
    """
    cdf = probs.cumsum(dim=-1)
    u = torch.cat([torch.rand(1, generator=g, device=probs.device, dtype=cdf.dtype) for g in generators])
    picked = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True)
    return picked.clamp_(max=probs.shape[-1] - 1).squeeze(-1)


class _SamplingGroup:
    """Rows that share temperature, top-k and top-p, sampled as one tensor.

    Top-k and top-p only ever keep the likeliest tokens, so the work is done on those candidates
    rather than on the whole vocabulary: with top-k, the k likeliest (temperature does not change
    which they are; top-p then renormalises over them, as Hugging Face's warpers do after top-k);
    with top-p alone, the NUCLEUS_CANDIDATES likeliest, for each row whose nucleus lies inside
    them, the whole vocabulary for a row whose nucleus does not. Left out, a token has
    probability 0 either way, so the distribution is Hugging Face's; what is saved is sorting,
    masking and normalising every logit each step (the sort alone is most of a sampling step).
    Which way a row goes depends on its own logits only, so batching cannot change it.
    """

    def __init__(
        self, settings: DecodingSettings, indices: torch.Tensor | None, generators: list[torch.Generator]
    ) -> None:
        self.indices = indices
        self.generators = generators
        self.top_k = settings.top_k
        self.top_p = settings.top_p
        self.temperature = settings.temperature
        self.warpers = _warper_chain(settings.temperature, settings.top_k, settings.top_p)
        self.candidate_warpers = _warper_chain(settings.temperature, 0, settings.top_p)
        """Temperature and top-p, for the top-k candidates."""

    def draw(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """The token each row draws, as vocabulary ids (R,)."""
        if self.indices is not None:  # None: the group is the whole batch, in order (no copy)
            scores = scores[self.indices]
        scores = scores.float()
        vocabulary = scores.shape[-1]
        if self.top_k:
            values, ids = topk(scores, min(self.top_k, vocabulary))
            picked = _draw(torch.softmax(_warp(self.candidate_warpers, input_ids, values), dim=-1), self.generators)
            return ids.gather(1, picked.unsqueeze(1)).squeeze(1)
        if self.top_p < 1.0 and vocabulary > NUCLEUS_CANDIDATES:
            return self._draw_nucleus(input_ids, scores)
        return _draw(torch.softmax(_warp(self.warpers, input_ids, scores), dim=-1), self.generators)

    def _draw_nucleus(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores / self.temperature, dim=-1)
        top, ids = probs.topk(NUCLEUS_CANDIDATES, dim=-1)
        # A token stays in the nucleus while the likelier tokens hold less than top_p of the mass.
        kept = torch.where(top.cumsum(dim=-1) - top < self.top_p, top, torch.zeros_like(top))
        fits = top.sum(dim=-1) >= self.top_p
        tokens = torch.empty(len(scores), dtype=torch.long, device=scores.device)
        for inside, rows in ((True, fits.nonzero()[:, 0]), (False, (~fits).nonzero()[:, 0])):
            if len(rows) == 0:
                continue
            generators = [self.generators[i] for i in rows.tolist()]
            if inside:
                tokens[rows] = ids[rows].gather(1, _draw(kept[rows], generators).unsqueeze(1)).squeeze(1)
            else:
                tokens[rows] = _draw(
                    torch.softmax(_warp(self.warpers, input_ids[rows], scores[rows]), dim=-1), generators
                )
        return tokens


class SeededSampling(LogitsProcessor):
    """Per-row sampling with per-row seeds and settings; greedy rows pass through unchanged.

    Rows with the same temperature, top-k and top-p (the usual case: most users keep the
    defaults) are sampled together as one tensor (`_SamplingGroup`): every operation works row
    by row, so a row's numbers are the ones it would get alone, and the per-row Python work is
    one random draw.

    For a sampling row the scores become -inf everywhere but at the drawn token, so the greedy
    `argmax` that `generate` applies afterwards picks exactly that token.
    """

    def __init__(self, rows: Sequence[tuple[DecodingSettings, int]], device: torch.device) -> None:
        grouped: dict[tuple[float, int, float], list[tuple[int, int]]] = {}
        for index, (settings, seed) in enumerate(rows):
            if settings.strategy == "sampling":
                key = (settings.temperature, settings.top_k, settings.top_p)
                grouped.setdefault(key, []).append((index, seed))
        self.groups = [
            _SamplingGroup(
                rows[members[0][0]][0],
                torch.tensor([index for index, _ in members], device=device),
                [torch.Generator(device=device).manual_seed(seed) for _, seed in members],
            )
            for members in grouped.values()
        ]

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for group in self.groups:
            tokens = group.draw(input_ids[group.indices], scores)
            chosen = torch.full(
                (len(group.indices), scores.shape[-1]), float("-inf"), dtype=scores.dtype, device=scores.device
            )
            chosen[torch.arange(len(tokens), device=scores.device), tokens] = 0.0
            scores[group.indices] = chosen
        return scores
