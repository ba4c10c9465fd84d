"""Which words of a prompt drive the next-token prediction: the perturbation method of Guan et al.

"Towards a Deep and Unified Understanding of Deep Neural Models in NLP" (ICML 2019), as the
source article applies it to GPT-2:

- x = the prompt's token embeddings; Φ(x) = the next-token logits at the last position.
- one learnable ratio_i per token, drawn from N(0, 1); σ_i = scale · sigmoid(ratio_i), with
  scale = 10 × the standard deviation of the word-embedding matrix;
- x̃ = x + σ ⊙ ε, ε ~ N(0, I), one σ per token shared by all embedding dimensions;
- loss = mean((Φ(x̃) − Φ(x))² / r²) − λ · mean_i log sigmoid(ratio_i), λ = 0.1, r = the
  element-wise standard deviation of Φ over real inputs;
- Adam at learning rate 0.01; report the σ of the lowest loss seen. A small σ means the
  prediction tolerates little noise on that token: the token matters.

Two optimisers of that one objective live here. `sigmas_reference` is the published loop (one
noise sample per iteration, Φ(x) recomputed every iteration as the published code does); the
tests and the benchmark compare against it. `sigmas_fast` is what `/why` runs: Φ(x) once, several
independent published starts optimised side by side as one batch and averaged (the loss has
several local minima, so one run's answer depends on its random start), a larger, decaying
learning rate, the last iterate as each start's estimate, and a stop when the loss stops
improving or the time budget runs out. Neither changes the objective, so both estimate the same
σ; `bench/why.py` measures how close each gets to a converged answer.

Model weights are always frozen while this runs: the backward pass then only reaches the
ratios, and nothing piles up in the weights' `.grad`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy as copy_module
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from core.config import WhyConfig
from core.prompts import PromptKind, check_text, check_token_count
from core.service import WhyResult, WordImportance
from model import cpu_features, int8
from model.explain.words import group_tokens, importances, word_sigma
from model.loading import LoadedModel

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
"""Called from the worker thread with a fraction done (0–1) and a short status line."""

SCALE_FACTOR = 10.0
"""scale = SCALE_FACTOR × std(word embeddings): the largest noise σ can reach, as published."""
RATE = 0.1
"""λ, the weight of the reward for large σ (the paper's entropy term)."""
LEARNING_RATE = 0.01
"""Adam's learning rate in the published loop."""
ARTICLE_ITERATIONS = 1000
"""Iterations of the published loop in the source article (the paper's code defaults to 5000)."""
FAST_LEARNING_RATE = 0.3
"""Adam's starting learning rate in the fast version (cosine-decayed to a tenth); see `sigmas_fast`."""
PHI_STD_VERSION = 1
"""Bump when the sample text or the way r is computed changes, so old caches are not reused."""
TOP_K = 5
PICTURE_S = 1.0
"""Time kept out of the optimisation's budget for drawing the bar chart (about 0.4 s for 20 words)."""
ATTENTION_PICTURE_S = 1.5
"""Likewise for the attention grid (about 1 s for GPT-2 small's 12 × 12 heads)."""
PROGRESS_INTERVAL_S = 0.25

SAMPLE_PASSAGES: tuple[str, ...] = (
    "Once upon a time there lived a poor miller who had three sons and nothing to leave them but his mill, "
    "his donkey and his cat.",
    'The old woman opened the door and looked out into the snow. "Who is there?" she asked, but no one '
    "answered, and the wind blew the candle out.",
    'In the morning the king called his daughters to him and said: "Whichever of you brings me the golden '
    'bird shall have half of my kingdom."',
    "A hungry fox saw some fine bunches of grapes hanging from a vine high above the ground. He jumped and "
    "jumped, but could not reach them, so he walked away saying they were sour.",
    "It was late in the evening when the doctor arrived at the house. He had not slept for two nights, and "
    "the letter in his pocket was still unopened.",
    "The little boat drifted down the river past the sleeping village, and the children watched the lights "
    "go out one by one until only the moon was left.",
)
"""Built-in text whose prefixes are the "real inputs" over which r (the spread of Φ) is measured:
story-like sentences, since stories are what `/why` is asked about."""

StepHook = Callable[[int, float], None]
"""Called after each optimisation step with the number of steps done and the best loss so far."""


@dataclass(frozen=True)
class Objective:
    """The fixed parts of the loss for one prompt: x, Φ(x), 1/r² and the noise scale."""

    model: PreTrainedModel
    embeds: torch.Tensor
    """x, shape (1, T, d), in the model's dtype."""
    target: torch.Tensor
    """Φ(x), shape (V,), float32."""
    inv_r2: torch.Tensor
    """1 / r², shape (V,), float32."""
    scale: float

    @property
    def length(self) -> int:
        return self.embeds.shape[1]

    def loss(self, ratio: torch.Tensor, noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The published loss of each of K independent starts, shape (K,).

        `ratio` is (K, T, 1), one row of ratios per start; `noise` is (K·S, T, d), S samples per
        start, consecutive. Each start's loss is the mean over its S samples, so summing the K
        losses before `backward` gives every start exactly its own gradient.
        """
        starts = ratio.shape[0]
        sigma = (torch.sigmoid(ratio) * self.scale).repeat_interleave(noise.shape[0] // starts, dim=0)
        perturbed = (self.embeds.float() + sigma * noise).to(self.model.dtype)
        fidelity = ((next_token_logits(self.model, perturbed) - target) ** 2 * self.inv_r2).mean(dim=-1)
        return fidelity.view(starts, -1).mean(dim=1) - RATE * F.logsigmoid(ratio).mean(dim=(1, 2))


@dataclass(frozen=True)
class SigmaRun:
    """The outcome of one optimisation: σ per token and how the run went."""

    sigmas: torch.Tensor
    """The estimate: σ per token, float32 on the CPU (for the published loop the σ of the lowest
    loss seen; for the fast one the mean over its starts of the last σ, see `sigmas_fast`)."""
    start_sigmas: torch.Tensor
    """σ per start and token, shape (K, T): what each independent start ended with."""
    scale: float
    steps: int
    samples: int
    """Noise samples drawn in all (steps × starts × samples per start)."""
    best_loss: float
    """The lowest loss seen (for several starts, the lowest of their summed losses)."""
    elapsed_s: float
    stop_reason: str
    """"iterations" (all steps done), "converged" (no better loss for `patience` steps),
    "time_budget" or "cancelled"."""


def next_token_logits(model: PreTrainedModel, embeds: torch.Tensor) -> torch.Tensor:
    """Φ: float32 next-token logits (B, V) at the last position of input embeddings (B, T, d).

    The LM head is applied to the last position only, as a plain 2-D matmul: `logits_to_keep=1`
    would do the same through a `bmm` that, with bf16 weights and a backward pass, copies the
    whole vocabulary matrix every call, several times slower on the CPU.
    """
    hidden = model.base_model(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
    head = model.get_output_embeddings()
    return F.linear(hidden, head.weight, head.bias).float()


@contextmanager
def frozen(model: PreTrainedModel) -> Iterator[None]:
    """Weights frozen and dropout off while inside; the caller's settings are restored after.

    `load_model` already freezes, so this is a no-op in the bot; it guards other callers
    (a model fresh from `from_pretrained` is trainable and in train mode).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    for parameter in trainable:
        parameter.requires_grad_(False)
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
        model.train(was_training)


def build_objective(model: PreTrainedModel, input_ids: torch.Tensor, phi_std: torch.Tensor) -> Objective:
    """Set up the loss for one prompt (`input_ids` of shape (T,)): x, Φ(x) once, 1/r², scale."""
    embedding = model.get_input_embeddings()
    device = embedding.weight.device
    with torch.no_grad():
        embeds = embedding(input_ids.to(device))[None]
        target = next_token_logits(model, embeds)[0]
        scale = SCALE_FACTOR * embedding.weight.float().std().item()
    inv_r2 = 1.0 / phi_std.to(device=device, dtype=torch.float32) ** 2
    return Objective(model=model, embeds=embeds, target=target, inv_r2=inv_r2, scale=scale)


def sigmas_reference(
    objective: Objective,
    *,
    iterations: int = ARTICLE_ITERATIONS,
    lr: float = LEARNING_RATE,
    seed: int = 0,
    on_step: StepHook | None = None,
    cancel: threading.Event | None = None,
) -> SigmaRun:
    """The published loop: one start, one noise sample per iteration, Φ(x) recomputed each time, Adam.

    One deliberate difference from the published code: it keeps the ratios *after* the
    optimiser step that followed the lowest loss; this keeps the ratios that *produced* it,
    which is what "the σ of the lowest loss seen" says (they differ by one Adam step, ≤ lr).
    """
    start = time.monotonic()
    generator, ratio = init_ratios(objective, 1, seed)
    optimizer = torch.optim.Adam([ratio], lr=lr)
    best_loss, best_ratio = math.inf, ratio.detach().clone()
    steps, reason = 0, "iterations"
    for steps in range(1, iterations + 1):
        if cancel is not None and cancel.is_set():
            steps, reason = steps - 1, "cancelled"
            break
        optimizer.zero_grad()
        target = next_token_logits(objective.model, objective.embeds)[0]
        loss = objective.loss(ratio, noise_samples(objective, 1, generator), target).sum()
        loss.backward()
        if loss.item() < best_loss:
            best_loss, best_ratio = loss.item(), ratio.detach().clone()
        optimizer.step()
        if on_step is not None:
            on_step(steps, best_loss)
    sigmas = to_sigmas(objective, best_ratio)
    return SigmaRun(
        sigmas=sigmas[0],
        start_sigmas=sigmas,
        scale=objective.scale,
        steps=steps,
        samples=steps,
        best_loss=best_loss,
        elapsed_s=time.monotonic() - start,
        stop_reason=reason,
    )


def sigmas_fast(
    objective: Objective,
    *,
    starts: int,
    samples_per_step: int,
    max_steps: int,
    patience: int,
    deadline: float | None = None,
    lr: float = FAST_LEARNING_RATE,
    seed: int = 0,
    min_steps: int = 1,
    antithetic: bool = False,
    antithetic_starts: bool = False,
    compute_dtype: torch.dtype | None = None,
    on_step: StepHook | None = None,
    cancel: threading.Event | None = None,
) -> SigmaRun:
    """The same objective, optimised fast: Φ(x) once, several independent starts run as one batch.

    The loss has several local minima: each token ends either kept (small σ) or drowned (σ near
    the scale), and which tokens a run keeps depends on its random N(0, 1) start as well as on
    the prompt. The published loop's answer is therefore one draw from a spread of answers,
    and what it estimates is their expectation over starts. Here `starts` runs, each begun as
    the published one is, with `samples_per_step` noise samples each, share one batched
    forward and backward pass per step (the K losses are summed, so each run gets only its own
    gradient), and the estimate is the mean of their σ: the same expectation with a fraction of
    the spread. On the shipped model, two converged 8-start means (other starts, other noise)
    agree at rank correlation 0.83 on average over the benchmark's 10 prompts, where one
    converged start agrees with an 8-start mean at only 0.62 (6 of those prompts): a single run,
    however long, mostly measures its own start (`bench/why.py`).

    Adam moves each ratio by at most about lr per step whatever the gradient's size: 1000
    published steps at 0.01 allow 10 units, while tens of steps at 0.01 would not leave the
    random start behind. So the rate starts at FAST_LEARNING_RATE (30× the published one) and
    decays along a cosine to a tenth of that by `max_steps`, and the estimate is each run's last
    iterate, which that decay settles (the σ of the lowest loss is, with a one-sample loss, as
    much a lucky draw of noise as a good σ).

    Stops after `max_steps`, after `patience` steps without a lower summed loss, at `deadline`
    (`time.monotonic()` seconds; a step is not started when the last step's duration says it
    would end past the deadline) or when `cancel` is set; at least `min_steps` are always run.

    `antithetic`: each start's samples come in pairs ε, −ε (`samples_per_step` rounded up to even):
    the loss's odd terms in ε cancel within a pair, a lower-variance gradient for the same passes.
    Off by default: on the shipped model, 4 starts × one pair did worse than 8 starts × 1 sample at
    the same cost (mean ρ 0.65 against 0.74, `bench/why.py`, issue 14): the spread between starts,
    not the noise of one start's gradient, is what limits the answer.
    `antithetic_starts`: half the starts begin at the other half's ratios negated (`init_ratios`).
    A run's answer depends on its start, and σ moves with the start's ratios much as the start
    does, so a start and its mirror err in opposite directions and their mean is closer to the
    expectation over starts: 8 mirrored starts × 10 steps (80 samples) agree with the converged
    answer as well as 8 independent starts × 20 steps (160 samples) did, on the tales v1 and v2
    models (`bench/why.py`, issue 14; docs/performance.md).
    `compute_dtype`: the model's forward and backward run on a copy of its weights in this dtype
    (bf16 where the hardware has it, see `compute_dtype_for`; `low_precision_copy`); x, Φ(x), σ,
    the noise, the loss and Adam stay float32.
    """
    start = time.monotonic()
    if compute_dtype is not None and compute_dtype != objective.model.dtype:
        objective = dataclasses.replace(objective, model=low_precision_copy(objective.model, compute_dtype))
    if antithetic:
        samples_per_step += samples_per_step % 2
    generator, ratio = init_ratios(objective, starts, seed, antithetic=antithetic_starts)
    optimizer = torch.optim.Adam([ratio], lr=lr)
    best_loss, since_best, step_time, steps, reason = math.inf, 0, 0.0, 0, "iterations"
    while steps < max_steps:
        now = time.monotonic()
        if steps >= min_steps:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            if deadline is not None and now + step_time > deadline:
                reason = "time_budget"
                break
        for group in optimizer.param_groups:
            group["lr"] = annealed(lr, steps, max_steps)
        optimizer.zero_grad()
        if antithetic:
            half = noise_samples(objective, starts * samples_per_step // 2, generator)
            noise = torch.stack((half, -half), dim=1).flatten(0, 1)  # ε, −ε next to each other, per start
        else:
            noise = noise_samples(objective, starts * samples_per_step, generator)
        loss = objective.loss(ratio, noise, objective.target).sum()
        loss.backward()
        value = loss.item()
        if value < best_loss:
            best_loss, since_best = value, 0
        else:
            since_best += 1
        optimizer.step()
        steps += 1
        step_time = time.monotonic() - now
        if on_step is not None:
            on_step(steps, best_loss)
        if since_best >= patience:
            reason = "converged"
            break
    sigmas = to_sigmas(objective, ratio)
    return SigmaRun(
        sigmas=sigmas.mean(dim=0),
        start_sigmas=sigmas,
        scale=objective.scale,
        steps=steps,
        samples=steps * starts * samples_per_step,
        best_loss=best_loss,
        elapsed_s=time.monotonic() - start,
        stop_reason=reason,
    )


_low_precision_copies: weakref.WeakKeyDictionary[PreTrainedModel, PreTrainedModel] = weakref.WeakKeyDictionary()
_low_precision_lock = threading.Lock()


def low_precision_copy(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """A frozen copy of `model` with its weights in `dtype`, made once per model and kept.

    Not `torch.autocast`: autocast re-casts a weight at every op unless the weight requires grad,
    and /why's weights are frozen, so on GPT-2 small it cast 124M parameters twice a step and gave
    back most of bf16's speed (a step of 6 × 15 tokens, one thread: fp32 0.59–0.73 s, autocast
    0.45–0.53 s, this copy 0.39 s; two threads 0.43 / 0.26–0.37 / 0.21 s; gradients agree with fp32
    at cosine 0.99999). Costs the weights once more in `dtype` (half the fp32 size for bf16).
    """
    with _low_precision_lock:
        copy = _low_precision_copies.get(model)
        if copy is None or copy.dtype != dtype:
            copy = copy_module(model).to(dtype).eval()
            copy.requires_grad_(False)
            _low_precision_copies[model] = copy
        return copy


def prepare(loaded: LoadedModel, config: WhyConfig, cache_dir: Path | None = None) -> None:
    """Do once, ahead of the first /why, what every /why needs: r (`phi_std_for`) and the copy of
    the weights in the compute dtype. On GPT-2 small that is about 2 s a first /why need not pay.
    An int8 model keeps no copy (see `explainable`); its r is its own, like its stories'."""
    phi_std_for(loaded, cache_dir)
    if int8.is_quantized(loaded.model):
        return
    dtype = compute_dtype_for(config.compute_dtype, loaded.model)
    if dtype is not None and dtype != loaded.model.dtype:
        low_precision_copy(loaded.model, dtype)


def explainable(loaded: LoadedModel) -> LoadedModel:
    """The model /why takes gradients through: `loaded` itself, or for an int8 model an fp32 copy of
    its (dequantized) weights, made for one /why and dropped after it (`compute_dtype` then applies
    to the copy as to any model). Int8 serving keeps no fp32 weights, which is its memory saving; a
    copy costs GPT-2 small its fp32 block weights while it lives and a fraction of a second to make."""
    if not int8.is_quantized(loaded.model):
        return loaded
    return dataclasses.replace(loaded, model=int8.float_copy(loaded.model))


BF16_CPU_MIN_PARAMETERS = 50_000_000
"""On a CPU, "auto" runs bf16 only for models at least this big. bench/why.py, one thread, this
project's Xeon with AMX: GPT-2 small (124M) 2.45 s in bf16 against 3.96 s in fp32, the shipped
5.4M model 0.2 s against 0.1 s (its matmuls are too small to repay the casts around them)."""


def compute_dtype_for(setting: str, model: PreTrainedModel) -> torch.dtype | None:
    """The dtype `model`'s passes run in for `why.compute_dtype`; None = the model's own.

    "auto" is bf16 only where it is fast: on a GPU that supports it (else fp16), or on a CPU with
    AVX-512-BF16 or AMX for a model of at least BF16_CPU_MIN_PARAMETERS. On a CPU without them
    (AVX2 only, say) oneDNN has no bf16 matmul and torch falls back to a reference loop about 80×
    slower than fp32 (measured on an AVX2 AMD EPYC), so there "auto" keeps the model's dtype.
    """
    if setting == "float32":
        return None
    if setting in ("bfloat16", "float16"):
        return getattr(torch, setting)
    if model.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if model.num_parameters() < BF16_CPU_MIN_PARAMETERS:
        return None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


cpu_has_fast_bf16 = cpu_features.native_bf16
"""Whether this CPU has bf16 matmul instructions (a module name of its own, for tests to replace)."""


def annealed(lr: float, step: int, max_steps: int, floor: float = 0.1) -> float:
    """Cosine decay from `lr` to `floor`·lr over `max_steps`: big early steps, a settled last iterate."""
    progress = min(step, max_steps) / max(max_steps, 1)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def init_ratios(
    objective: Objective, starts: int, seed: int, *, antithetic: bool = False
) -> tuple[torch.Generator, torch.Tensor]:
    """The published start, `starts` times: ratios drawn from N(0, 1), shape (starts, T, 1).

    `antithetic`: the second half of the starts are the first half negated (each still N(0, 1)),
    so the starts' mean covers both sides of every ratio's start.
    """
    device = objective.embeds.device
    generator = torch.Generator(device=device).manual_seed(seed)
    drawn = (starts + 1) // 2 if antithetic else starts
    ratio = torch.randn(drawn, objective.length, 1, generator=generator, device=device)
    if antithetic:
        ratio = torch.cat((ratio, -ratio))[:starts]
    return generator, ratio.requires_grad_(True)


def noise_samples(objective: Objective, samples: int, generator: torch.Generator) -> torch.Tensor:
    """ε ~ N(0, I), shape (samples, T, d)."""
    _, length, dim = objective.embeds.shape
    return torch.randn(samples, length, dim, generator=generator, device=objective.embeds.device)


def to_sigmas(objective: Objective, ratio: torch.Tensor) -> torch.Tensor:
    """σ = scale · sigmoid(ratio), shape (starts, T), float32 on the CPU."""
    return (torch.sigmoid(ratio.detach()) * objective.scale)[..., 0].float().cpu()


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two σ vectors, ties given their average rank (as scipy does).

    How the tests and the benchmark compare two rankings of the same tokens; 1 = same order.
    A constant vector has no ranking, so its correlation with anything is 0.
    """
    if len(a) != len(b):
        raise ValueError("rank correlation needs two vectors of the same length")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = (ra.norm() * rb.norm()).item()
    return (ra @ rb).item() / norm if norm > 0 else 0.0


def _average_ranks(values: Sequence[float]) -> torch.Tensor:
    data = torch.as_tensor(list(values), dtype=torch.float64)
    ranks = torch.empty_like(data)
    ranks[data.argsort(stable=True)] = torch.arange(len(data), dtype=torch.float64)
    for value in data.unique():
        tied = data == value
        ranks[tied] = ranks[tied].mean()
    return ranks


# --- r: the spread of Φ over real inputs, computed once per model and cached -----------------------

_phi_std_memory: weakref.WeakKeyDictionary[PreTrainedModel, torch.Tensor] = weakref.WeakKeyDictionary()
_phi_std_lock = threading.Lock()


def compute_phi_std(model: PreTrainedModel, passages: Sequence[torch.Tensor]) -> torch.Tensor:
    """r: the element-wise (per vocabulary entry) standard deviation of Φ over real inputs.

    One forward pass per passage gives Φ of every prefix at once (the model is causal), so a few
    hundred tokens of text give a few hundred inputs. Prefixes of one token are left out: `/why`
    never explains them. Population std (ddof 0), as the published `calculate_regularization`;
    floored at a tiny value so a logit that never moves cannot divide by zero.
    """
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    count, total, squares = 0, 0.0, 0.0
    with torch.no_grad():
        for ids in passages:
            hidden = model.base_model(input_ids=ids[None].to(device), use_cache=False).last_hidden_state[0, 1:]
            logits = F.linear(hidden, head.weight, head.bias) if isinstance(head, torch.nn.Linear) else head(hidden)
            logits = logits.double()  # summed passage by passage: no (inputs × vocabulary) matrix of all of them
            count, total, squares = count + len(logits), total + logits.sum(dim=0), squares + (logits**2).sum(dim=0)
    if count < 2:
        raise ValueError("r needs at least two inputs")
    mean = total / count
    return (squares / count - mean**2).clamp_min(0).sqrt().float().clamp_min(1e-6).cpu()


def phi_std_for(loaded: LoadedModel, cache_dir: Path | None = None) -> torch.Tensor:
    """r for this model: from memory, else from the cache file, else computed on SAMPLE_PASSAGES.

    The cache file is `<cache_dir>/phi_std-<key>.pt`, where the bot keeps its data (beside the
    preferences database), never in the model directory: that may be read-only (a container
    image, a shared volume). The key is made from the model's config, a sample of every weight
    tensor and the tokenized sample text, so a different or retrained model never reuses another's
    r. Without `cache_dir`, or when the file cannot be written, r is kept in memory only.
    """
    with _phi_std_lock:
        cached = _phi_std_memory.get(loaded.model)
        if cached is not None:
            return cached
        passages = _sample_passages(loaded)
        key = _model_key(loaded.model, passages)
        path = None if cache_dir is None else Path(cache_dir) / cache_file_name(key)
        phi_std = None if path is None else _read_cache(path, key)
        if phi_std is None:
            with frozen(loaded.model):
                phi_std = compute_phi_std(loaded.model, passages)
            if path is not None:
                _write_cache(path, key, phi_std)
        _phi_std_memory[loaded.model] = phi_std
        return phi_std


def cache_file_name(key: str) -> str:
    return f"phi_std-{key[:24]}.pt"


def _sample_passages(loaded: LoadedModel) -> list[torch.Tensor]:
    limit = getattr(loaded.model.config, "n_positions", None) or loaded.tokenizer.model_max_length
    passages = []
    for passage in SAMPLE_PASSAGES:
        ids = loaded.tokenizer(passage, add_special_tokens=False)["input_ids"][:limit]
        if len(ids) >= 2:
            passages.append(torch.tensor(ids, dtype=torch.long))
    return passages


def _model_key(model: PreTrainedModel, passages: Sequence[torch.Tensor]) -> str:
    """A fingerprint of the model: config, every tensor's name, shape and a strided sample of values.

    Not the path or the transformers version (`_name_or_path`, `transformers_version`): a copied
    or moved model directory keeps its r.

    A strided sample rather than all the bytes: hashing 500 MB of weights would take seconds,
    while any training changes nearly every value, so 4096 of each tensor tell models apart.
    """
    digest = hashlib.sha256(f"v{PHI_STD_VERSION}".encode())
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.tobytes())
    for ids in passages:
        digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> torch.Tensor | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file is not fatal: r is recomputed and the file rewritten
        log.warning("ignoring unreadable r cache %s", path, exc_info=True)
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("phi_std"), torch.Tensor):
        return None
    return saved["phi_std"]


def _write_cache(path: Path, key: str, phi_std: torch.Tensor) -> None:
    """Atomic write (temp file + rename), so a concurrent reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".phi_std-", suffix=".tmp", delete=False) as tmp:
            torch.save({"key": key, "phi_std": phi_std, "version": PHI_STD_VERSION}, tmp)
        os.replace(tmp.name, path)
    except OSError as exc:
        log.warning("could not save r cache to %s (%s); it will be recomputed next start", path, exc)


# --- the service entry point -----------------------------------------------------------------------


class _Progress:
    """Calls the user's progress callback at most every PROGRESS_INTERVAL_S; never lets it kill a run."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = -math.inf

    def __call__(self, fraction: float, status: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._callback is None or (not force and now - self._last < PROGRESS_INTERVAL_S):
            return
        self._last = now
        try:
            self._callback(min(1.0, max(0.0, fraction)), status)
        except Exception:
            log.exception("progress callback failed; no more progress for this request")
            self._callback = None


def tokenize_prompt(
    loaded: LoadedModel, prompt: str, max_prompt_tokens: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of a prompt, or the PromptError of `core.prompts`."""
    limit = why_token_limit(loaded, max_prompt_tokens)
    check_text(prompt, PromptKind.WHY, limit)
    encoded = loaded.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    check_token_count(len(ids), limit, PromptKind.WHY)
    return ids, offsets


def why_token_limit(loaded: LoadedModel, max_prompt_tokens: int) -> int:
    """The bot's prompt limit, or the model's context when that is shorter (a tiny test model)."""
    return min(max_prompt_tokens, getattr(loaded.model.config, "n_positions", max_prompt_tokens))


def explain(
    loaded: LoadedModel,
    prompt: str,
    *,
    config: WhyConfig,
    max_prompt_tokens: int,
    seed: int,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    view: str = "bars",
    cache_dir: Path | None = None,
) -> WhyResult:
    """Explain the next-token prediction of `prompt`: σ per word and token, top predictions, a chart.

    Runs in the model service's worker thread; blocks for at most about `config.time_budget_s`.
    `view="attention"` also attaches the attention picture. Setting `cancel` ends the
    optimisation after the current step and returns what it has (noted in `notes`).
    `cache_dir` is where r is cached (see `phi_std_for`).
    Raises PromptError for an empty, one-token or too-long prompt.
    """
    from model.explain import charts  # matplotlib is imported only when a picture is drawn

    start = time.monotonic()
    ids, offsets = tokenize_prompt(loaded, prompt, max_prompt_tokens)
    phi_std = phi_std_for(loaded, cache_dir)  # the served model's own (int8 too: inference only)
    loaded = explainable(loaded)
    report = _Progress(progress)
    report(0.0, "Measuring how the model's predictions vary…", force=True)
    budget = config.time_budget_s
    drawing_s = PICTURE_S + (ATTENTION_PICTURE_S if view == "attention" else 0.0)
    deadline = start + budget - min(drawing_s, 0.25 * budget)  # leave room for the pictures after the loop

    def on_step(steps: int, best_loss: float) -> None:
        fraction = max(steps / config.max_steps, (time.monotonic() - start) / budget)
        report(fraction, f"Perturbing the prompt: step {steps}, loss {best_loss:.3f}")

    with frozen(loaded.model):
        objective = build_objective(loaded.model, torch.tensor(ids), phi_std)
        run = sigmas_fast(
            objective,
            starts=config.starts,
            samples_per_step=config.samples_per_step,
            max_steps=config.max_steps,
            patience=config.patience,
            deadline=deadline,
            seed=seed,
            antithetic=config.antithetic,
            antithetic_starts=config.antithetic_starts,
            compute_dtype=compute_dtype_for(config.compute_dtype, objective.model),
            on_step=on_step,
            cancel=cancel,
        )
        predictions = top_predictions(loaded, objective.target)
        attention_png = None
        if view == "attention":
            from model.explain.attention import last_token_attention

            attention_png = charts.attention_png(
                last_token_attention(loaded.model, torch.tensor(ids)), _token_texts(loaded, ids)
            )
    words, token_sigmas = _word_rows(loaded, prompt, ids, offsets, run)
    image = charts.importance_png(words, scale=run.scale)
    report(1.0, "Done", force=True)
    return WhyResult(
        prompt=prompt,
        words=words,
        token_sigmas=token_sigmas,
        top_predictions=predictions,
        iterations=run.steps,
        elapsed_s=time.monotonic() - start,
        stopped_early=run.stop_reason != "iterations",
        image_png=image,
        attention_png=attention_png,
        notes=_notes(run),
    )


def top_predictions(loaded: LoadedModel, logits: torch.Tensor, k: int = TOP_K) -> tuple[tuple[str, float], ...]:
    """The k likeliest next tokens with their probabilities."""
    probs, ids = torch.softmax(logits.float(), dim=-1).topk(k)
    return tuple((loaded.tokenizer.decode([i]), p) for i, p in zip(ids.tolist(), probs.tolist()))


def _token_texts(loaded: LoadedModel, ids: Sequence[int]) -> list[str]:
    """Each token as the text it stands for (with its leading space); a byte fragment shows as �."""
    return [loaded.tokenizer.decode([i]) for i in ids]


def _word_rows(
    loaded: LoadedModel, prompt: str, ids: list[int], offsets: list[tuple[int, int]], run: SigmaRun
) -> tuple[tuple[WordImportance, ...], tuple[tuple[str, float], ...]]:
    """Per-word rows (σ = the smallest of its pieces', see `word_sigma`) and per-token σ."""
    tokens = _token_texts(loaded, ids)
    sigmas = run.sigmas.tolist()
    words = group_tokens(prompt, offsets)
    word_sigmas = [word_sigma([sigmas[i] for i in w.token_indices]) for w in words]
    rows = tuple(
        WordImportance(word=w.text, tokens=tuple(tokens[i] for i in w.token_indices), sigma=s, importance=level)
        for w, s, level in zip(words, word_sigmas, importances(word_sigmas, run.scale))
    )
    return rows, tuple(zip(tokens, sigmas))


def _notes(run: SigmaRun) -> tuple[str, ...]:
    """How the optimisation ended, without a time: the footer gives the whole explanation's time once."""
    samples = f"{run.samples} noise samples"
    if run.stop_reason == "converged":
        return (f"Converged: the loss stopped improving ({samples}).",)
    if run.stop_reason == "time_budget":
        return (
            f"Stopped at the time budget ({samples}); the loss was still improving, so close calls "
            "between words may be rough.",
        )
    if run.stop_reason == "cancelled":
        return (f"Cancelled ({samples}); this is the best estimate so far.",)
    return (f"Ran every step ({samples}).",)
