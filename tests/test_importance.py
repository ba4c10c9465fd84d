"""The perturbation explanation (model/importance.py), its pictures and its command line.

The known-answer tests train a one-layer GPT-2 for a second on a task whose answer is known by
construction: the next token is a copy of the token at one fixed position, so that position, and
only it, decides the prediction.
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from core.config import ROOT, WhyConfig
from core.errors import PromptError
from model.__main__ import main as model_main
from model.explain import importance
from model.explain.attention import last_token_attention
from model.explain.charts import attention_png, importance_png
from model.explain.importance import (
    build_objective,
    explain,
    next_token_logits,
    phi_std_for,
    rank_correlation,
    sigmas_fast,
    sigmas_reference,
)
from model.loading import LoadedModel, load_model
from tests.tiny_model import build_tiny_model

COPY_POSITION, COPY_LENGTH, COPY_VOCAB, COPY_PROMPTS = 2, 6, 16, 3
FAST = WhyConfig()
"""The bot's default /why settings."""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def copy_model() -> tuple[GPT2LMHeadModel, torch.Tensor]:
    """A 1-layer GPT-2 trained until it copies the token at COPY_POSITION, and r on its inputs."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=COPY_VOCAB,
        n_positions=8,
        n_embd=32,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        batch = torch.randint(0, COPY_VOCAB, (64, COPY_LENGTH))
        loss = F.cross_entropy(model(input_ids=batch).logits[:, -1], batch[:, COPY_POSITION])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    inputs = torch.randint(0, COPY_VOCAB, (512, COPY_LENGTH))
    with torch.no_grad():
        logits = next_token_logits(model, model.get_input_embeddings()(inputs))
    assert (logits.argmax(-1) == inputs[:, COPY_POSITION]).float().mean() > 0.98, "the copy task was not learnt"
    return model, logits.std(dim=0, correction=0)


@pytest.fixture(scope="module")
def copy_reference_runs(copy_model) -> dict[tuple[int, int], torch.Tensor]:
    """σ from the published loop for each copy prompt and two seeds (computed once: it is the slow part)."""
    model, phi_std = copy_model
    return {
        (index, seed): sigmas_reference(build_objective(model, prompt, phi_std), seed=seed).sigmas
        for index, prompt in enumerate(_copy_prompts(COPY_PROMPTS))
        for seed in (1, 2)
    }


def _copy_prompts(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, COPY_VOCAB, (COPY_LENGTH,), generator=generator) for _ in range(count)]


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# --- the method ------------------------------------------------------------------------------------


def test_reference_ranks_the_copied_position_most_important(copy_reference_runs) -> None:
    """The published loop (1000 single-sample iterations) finds the one position the answer copies."""
    for (_, seed), sigmas in copy_reference_runs.items():
        assert sigmas.argmin().item() == COPY_POSITION, (seed, sigmas)


def test_fast_ranks_the_copied_position_most_important(copy_model) -> None:
    """The fast version, with the bot's default settings, finds the same position."""
    model, phi_std = copy_model
    for seed, prompt in enumerate(_copy_prompts(6)):
        run = sigmas_fast(
            build_objective(model, prompt, phi_std),
            starts=FAST.starts,
            max_steps=FAST.max_steps,
            samples_per_step=FAST.samples_per_step,
            patience=FAST.patience,
            seed=seed,
            antithetic=FAST.antithetic,
            antithetic_starts=FAST.antithetic_starts,
        )
        assert run.sigmas.argmin().item() == COPY_POSITION, run.sigmas


def test_fast_agrees_with_reference_as_well_as_the_reference_agrees_with_itself(
    copy_model, copy_reference_runs
) -> None:
    """Over several prompts, fast-vs-reference rank correlation is at least reference-vs-reference.

    The published loop is noisy: two runs with different seeds bound how well any estimate can
    agree with one run. The fast version (another seed again) must reach that bound on average.
    """
    model, phi_std = copy_model
    fast_vs_ref, ref_vs_ref = [], []
    for index, prompt in enumerate(_copy_prompts(COPY_PROMPTS)):
        fast = sigmas_fast(
            build_objective(model, prompt, phi_std),
            starts=FAST.starts,
            max_steps=FAST.max_steps,
            samples_per_step=FAST.samples_per_step,
            patience=FAST.patience,
            seed=3,
        ).sigmas
        fast_vs_ref.append(rank_correlation(fast, copy_reference_runs[index, 1]))
        ref_vs_ref.append(rank_correlation(copy_reference_runs[index, 2], copy_reference_runs[index, 1]))
    assert sum(fast_vs_ref) >= sum(ref_vs_ref), (fast_vs_ref, ref_vs_ref)
    assert min(fast_vs_ref) > 0.3, fast_vs_ref


def test_each_start_gets_only_its_own_gradient(copy_model) -> None:
    """Starts optimised side by side in one batch move exactly as each would alone.

    The fast version sums the starts' losses before one backward pass; this checks that no start's
    gradient leaks into another's, by comparing each start's gradient with the gradient of its own
    loss computed alone on the same noise.
    """
    model, phi_std = copy_model
    objective = build_objective(model, _copy_prompts(1)[0], phi_std)
    _, ratio = importance.init_ratios(objective, 3, seed=5)
    noise = importance.noise_samples(objective, 3 * 2, torch.Generator().manual_seed(6))
    objective.loss(ratio, noise, objective.target).sum().backward()
    for start in range(3):
        alone = ratio.detach()[start : start + 1].clone().requires_grad_(True)
        objective.loss(alone, noise[2 * start : 2 * start + 2], objective.target).sum().backward()
        torch.testing.assert_close(ratio.grad[start], alone.grad[0])


def test_weights_untouched_and_no_gradients_after_runs(tiny_loaded) -> None:
    """Neither version changes a weight, leaves a .grad behind, or unfreezes the model."""
    before = _snapshot(tiny_loaded.model)
    objective = build_objective(tiny_loaded.model, torch.tensor([5, 17, 42, 99]), phi_std_for(tiny_loaded))
    sigmas_reference(objective, iterations=50)
    sigmas_fast(objective, starts=4, max_steps=20, samples_per_step=2, patience=100)
    explain(
        tiny_loaded,
        "The king had three daughters",
        config=FAST.model_copy(update={"max_steps": 20}),
        max_prompt_tokens=200,
        seed=0,
    )
    after = _snapshot(tiny_loaded.model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None and not p.requires_grad for p in tiny_loaded.model.parameters())
    assert not tiny_loaded.model.training


def test_trainable_model_is_frozen_during_the_run_and_restored_after(tiny_model_dir: Path) -> None:
    """A model straight from from_pretrained (trainable, train mode) gets no gradients and keeps its flags."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    before = _snapshot(model)
    phi_std = torch.ones(model.config.vocab_size)
    with importance.frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        sigmas_fast(
            build_objective(model, torch.tensor([1, 2, 3]), phi_std),
            starts=2,
            max_steps=5,
            samples_per_step=2,
            patience=10,
        )
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


# --- the service entry point ---------------------------------------------------------------------


def test_explain_returns_words_tokens_predictions_and_chart(tiny_loaded) -> None:
    """Words as typed, σ of a word = smallest σ of its tokens, importance 1 at the top, 5 predictions, a PNG."""
    prompt = "Holmes looked at the astonished mermaid,"
    result = explain(
        tiny_loaded, prompt, config=FAST.model_copy(update={"max_steps": 30}), max_prompt_tokens=200, seed=0
    )
    assert [w.word for w in result.words] == prompt.split()
    assert len(result.token_sigmas) == len(tiny_loaded.tokenizer(prompt)["input_ids"])
    sigmas = iter(sigma for _, sigma in result.token_sigmas)
    for word in result.words:
        assert word.sigma == min(next(sigmas) for _ in word.tokens)
    assert max(w.importance for w in result.words) == 1.0
    assert min(w.sigma for w in result.words) == next(w.sigma for w in result.words if w.importance == 1.0)
    probabilities = [p for _, p in result.top_predictions]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert result.image_png.startswith(PNG_MAGIC) and result.attention_png is None
    assert result.iterations == 30 and result.notes


def test_explain_attention_view_attaches_the_attention_picture(tiny_loaded) -> None:
    """view="attention" adds the attention grid PNG."""
    result = explain(
        tiny_loaded,
        "The fox said nothing",
        config=FAST.model_copy(update={"max_steps": 3}),
        max_prompt_tokens=200,
        seed=0,
        view="attention",
    )
    assert result.attention_png.startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("prompt", "limit", "message"),
    [
        ("", 200, "empty"),
        ("   \n", 200, "empty"),
        ("The", 200, "single token"),
        ("Once upon a time there lived a king", 5, "the limit is 5 tokens"),
    ],
)
def test_explain_rejects_unusable_prompts_with_a_clear_message(
    tiny_loaded, prompt: str, limit: int, message: str
) -> None:
    """Empty, one-token and over-long prompts raise PromptError saying what is wrong."""
    with pytest.raises(PromptError, match=message):
        explain(tiny_loaded, prompt, config=FAST, max_prompt_tokens=limit, seed=0)


def test_fast_loop_stops_at_its_deadline(tiny_loaded) -> None:
    """With steps and patience unlimited, the loop never starts a step that would end past the deadline."""
    objective = build_objective(tiny_loaded.model, torch.tensor([5, 17, 42, 99, 7]), phi_std_for(tiny_loaded))
    start = time.monotonic()
    run = sigmas_fast(objective, starts=8, max_steps=10**9, samples_per_step=2, patience=10**9, deadline=start + 0.5)
    assert run.stop_reason == "time_budget" and run.steps > 1
    assert time.monotonic() - start <= 0.5 + 2 * run.elapsed_s / run.steps


def test_explain_respects_the_time_budget(tiny_loaded) -> None:
    """The whole explanation, picture included, ends within the configured budget and says it stopped there."""
    config = WhyConfig(time_budget_s=3.0, max_steps=10**9, starts=8, samples_per_step=2, patience=10**9)
    start = time.monotonic()
    result = explain(
        tiny_loaded,
        "Once upon a time there lived a king who had three daughters",
        config=config,
        max_prompt_tokens=200,
        seed=0,
    )
    assert time.monotonic() - start <= 3.0 + 0.25
    assert result.stopped_early and "time budget" in result.notes[0]


def test_explain_reports_progress_at_most_every_quarter_second_and_can_be_cancelled(tiny_loaded) -> None:
    """Progress calls are throttled (first and last forced); setting cancel ends the run early."""
    calls: list[tuple[float, float]] = []
    cancel = threading.Event()

    def progress(fraction: float, status: str) -> None:
        calls.append((time.monotonic(), fraction))
        if len(calls) == 3:
            cancel.set()

    config = WhyConfig(time_budget_s=30.0, max_steps=10**9, starts=8, samples_per_step=2, patience=10**9)
    result = explain(
        tiny_loaded,
        "The youngest was so beautiful",
        config=config,
        max_prompt_tokens=200,
        seed=0,
        progress=progress,
        cancel=cancel,
    )
    assert "Cancelled" in result.notes[0] and result.elapsed_s < 5
    gaps = [later[0] - earlier[0] for earlier, later in zip(calls[:-1], calls[1:], strict=True)]
    assert all(gap >= importance.PROGRESS_INTERVAL_S - 0.01 for gap in gaps[1:-1])
    assert calls[-1][1] == 1.0


# --- r, the spread of Φ, and its cache -------------------------------------------------------------


def test_phi_std_is_cached_in_the_cache_dir_not_the_model_dir_and_not_reused_by_another_model(
    tmp_path: Path, monkeypatch
) -> None:
    """r is saved under the cache dir (the data folder), read back by the next load, and recomputed
    for other weights; nothing is written into the model directory (issue 18: it may be read-only)."""
    directory = build_tiny_model(tmp_path / "model", seed=5)
    before = sorted(p.name for p in directory.iterdir())
    cache = tmp_path / "data" / "cache"
    first = phi_std_for(load_model(directory, device="cpu", dtype="float32"), cache)
    assert len(list(cache.glob("phi_std-*.pt"))) == 1
    assert sorted(p.name for p in directory.iterdir()) == before

    def no_compute(*args, **kwargs):
        raise AssertionError("r should have come from the cache file")

    with monkeypatch.context() as patch:
        patch.setattr(importance, "compute_phi_std", no_compute)
        assert torch.equal(phi_std_for(load_model(directory, device="cpu", dtype="float32"), cache), first)
    build_tiny_model(directory, seed=6)  # different weights in the same directory
    assert not torch.equal(phi_std_for(load_model(directory, device="cpu", dtype="float32"), cache), first)


def test_phi_std_is_kept_in_memory_when_the_cache_cannot_be_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A cache folder that cannot be made (here: under a file) costs a warning, never the /why."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    hub_like = LoadedModel(model=loaded.model, tokenizer=loaded.tokenizer, device=loaded.device, source="org/tales")
    assert phi_std_for(hub_like, blocker / "cache").shape[0] == loaded.model.config.vocab_size
    assert phi_std_for(hub_like) is phi_std_for(hub_like, blocker / "cache")


# --- attention -------------------------------------------------------------------------------------


def test_last_token_attention_matches_eager_output_attentions(tiny_model_dir: Path, tiny_loaded) -> None:
    """The hook-based weights equal what an eager-attention copy of the model returns."""
    ids = torch.tensor(tiny_loaded.tokenizer("The fox and the crow met in the forest")["input_ids"])
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = torch.stack([a[0, :, -1, :] for a in eager(input_ids=ids[None], output_attentions=True).attentions])
    weights = last_token_attention(tiny_loaded.model, ids)
    assert weights.shape == (2, 2, len(ids))
    torch.testing.assert_close(torch.from_numpy(weights), expected, rtol=1e-4, atol=1e-5)


# --- pictures --------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    return struct.unpack(">II", data[16:24])


def test_pictures_of_a_longest_prompt_stay_within_discord_limits() -> None:
    """200 words and a 12×12 attention grid over 200 tokens: valid PNGs under 8 MB and 10,000 px a side."""
    from core.service import WordImportance

    words = [
        WordImportance(word=f"word{i}", tokens=(f" word{i}",), sigma=0.1 + i / 250, importance=1 - i / 200)
        for i in range(200)
    ]
    start = time.monotonic()
    bars = importance_png(words, scale=1.0)
    grid = attention_png(torch.softmax(torch.randn(12, 12, 200), -1).numpy(), [f" t{i}" for i in range(200)])
    assert time.monotonic() - start < 30
    for data in (bars, grid):
        width, height = _png_size(data)
        assert len(data) < 8 * 2**20 and max(width, height) <= 10_000


def test_chart_draws_dollar_signs_and_unusual_text_literally() -> None:
    """Prompt text never reaches mathtext: "$5 and $6" renders instead of failing to parse."""
    from core.service import WordImportance

    words = [WordImportance(word=w, tokens=(w,), sigma=0.5, importance=0.5) for w in ["$5", "and", "$6", "王子", "🦊"]]
    assert importance_png(words, scale=1.0).startswith(PNG_MAGIC)


# --- command line ----------------------------------------------------------------------------------


def test_cli_prints_bars_and_predictions(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    """`python -m model why` prints one bar line per word, the predictions, and writes the PNGs asked for."""
    picture = tmp_path / "why.png"
    status = model_main(
        [
            "why",
            "The king had three daughters",
            "--model",
            str(tiny_model_dir),
            "--budget",
            "2",
            "--png",
            str(picture),
            "--attention-png",
            str(tmp_path / "attention.png"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    for word in ["The", "king", "had", "three", "daughters"]:
        assert any(line.strip().startswith(word) and "σ" in line for line in out.splitlines())
    assert "Most likely next tokens" in out and picture.read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "attention.png").exists()


def test_cli_reports_a_bad_prompt_as_a_message_and_status_2(tiny_model_dir: Path, capsys) -> None:
    """A user mistake is a one-line message, not a traceback."""
    assert model_main(["why", "", "--model", str(tiny_model_dir)]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "why"])
def test_model_and_config_go_before_or_after_the_command(tiny_model_dir: Path, command: str, capsys) -> None:
    """`python -m model --model DIR why ...` and `python -m model why ... --model DIR`, and the same for generate."""
    extra = ["--max-new-tokens", "4", "--seed", "1"] if command == "generate" else ["--budget", "1"]
    config = ["--config", str(ROOT / "config.yaml")]
    before = model_main([*config, "--model", str(tiny_model_dir), command, "The king had three", *extra])
    first = capsys.readouterr().out
    after = model_main([command, "The king had three", *extra, "--model", str(tiny_model_dir), *config])
    assert before == after == 0 and first and capsys.readouterr().out.split("\n")[:1] == first.split("\n")[:1]


def test_copy_of_model_dir_keeps_cache_key_valid(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A copied model directory has the same cache key (the key is content, not path)."""
    original = load_model(tiny_model_dir, device="cpu", dtype="float32")
    copy = load_model(Path(shutil.copytree(tiny_model_dir, tmp_path / "copy")), device="cpu", dtype="float32")
    keys = [importance._model_key(m.model, importance._sample_passages(m)) for m in (original, copy)]
    assert keys[0] == keys[1]


def test_bf16_passes_keep_sigma_and_loss_in_float32_and_find_the_same_position(copy_model) -> None:
    """compute_dtype=bf16: the model's passes run on a bf16 copy of the weights (made once, the
    model itself untouched), σ and the loss stay float32 and the answer is the fp32 one (the copied
    position); "auto" picks bf16 on a CPU only where it is fast."""
    model, phi_std = copy_model
    objective = build_objective(model, _copy_prompts(1)[0], phi_std)
    low = importance.low_precision_copy(model, torch.bfloat16)
    assert low.dtype == torch.bfloat16 and model.dtype == torch.float32
    assert importance.low_precision_copy(model, torch.bfloat16) is low
    assert not any(p.requires_grad for p in low.parameters())
    _, ratio = importance.init_ratios(objective, 2, seed=1)
    noise = importance.noise_samples(objective, 2, torch.Generator().manual_seed(2))
    loss = dataclasses.replace(objective, model=low).loss(ratio, noise, objective.target)
    assert loss.dtype == torch.float32
    loss.sum().backward()
    assert ratio.grad is not None and ratio.grad.dtype == torch.float32 and ratio.grad.abs().sum() > 0
    run = sigmas_fast(objective, starts=4, max_steps=20, samples_per_step=1, patience=100, compute_dtype=torch.bfloat16)
    assert run.sigmas.dtype == torch.float32 and run.sigmas.argmin().item() == COPY_POSITION
    assert importance.compute_dtype_for("float32", model) is None
    assert importance.compute_dtype_for("bfloat16", model) is torch.bfloat16


def test_auto_picks_bf16_on_a_cpu_only_for_a_big_enough_model_on_a_cpu_that_has_it(copy_model, monkeypatch) -> None:
    """A small model's matmuls do not repay bf16's casts (the shipped model is slower in bf16)."""
    model, _ = copy_model
    assert model.num_parameters() < importance.BF16_CPU_MIN_PARAMETERS
    assert importance.compute_dtype_for("auto", model) is None
    monkeypatch.setattr(importance, "BF16_CPU_MIN_PARAMETERS", model.num_parameters())
    expected = torch.bfloat16 if importance.cpu_has_fast_bf16() else None
    assert importance.compute_dtype_for("auto", model) is expected
    monkeypatch.setattr(importance, "cpu_has_fast_bf16", lambda: False)
    assert importance.compute_dtype_for("auto", model) is None


def test_antithetic_starts_and_noise_come_in_negated_pairs(copy_model) -> None:
    model, phi_std = copy_model
    objective = build_objective(model, _copy_prompts(1)[0], phi_std)
    _, ratio = importance.init_ratios(objective, 4, seed=3, antithetic=True)
    torch.testing.assert_close(ratio[2:], -ratio[:2])
    run = sigmas_fast(
        objective, starts=4, max_steps=3, samples_per_step=1, patience=100, antithetic=True, antithetic_starts=True
    )
    assert run.samples == 3 * 4 * 2  # one sample a start becomes one pair
