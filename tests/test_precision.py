"""Precision modes (model/int8.py, model/precision.py, model/step.py): int8 layers whose rows do not
depend on their batch, stories that come out the same alone and batched in every mode, `auto`
deciding from the gate's measured facts only, and /why still taking gradients on an int8 model."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from core.config import WhyConfig
from core.errors import ModelLoadError
from core.settings import DecodingSettings
from model import decode_attention, int8, precision, vnni
from model.engine import ContinuousBatch
from model.generation import RowJob, generate_batch
from model.loading import load_model
from model.step import DecodeStep

pytestmark = pytest.mark.skipif(not int8.available(), reason="this torch build has no FBGEMM")

PROMPTS = ["Once upon a time there", "The fox said", "A king had three daughters and the youngest", "Hello", "The"]
SETTINGS = [
    DecodingSettings(strategy="greedy", max_new_tokens=30, repetition_penalty=1.0),
    DecodingSettings(max_new_tokens=40),
    DecodingSettings(max_new_tokens=25, temperature=1.3, top_k=0, top_p=0.9, repetition_penalty=1.3),
    DecodingSettings(strategy="greedy", max_new_tokens=20, no_repeat_ngram_size=2),
    DecodingSettings(max_new_tokens=35, top_k=5, temperature=0.7),
]


@pytest.fixture(scope="module")
def loaded_in(tiny_model_dir):
    """The tiny model loaded by the bot's own code in each precision (once per mode); its matrices
    are all below int8's size threshold, so the threshold is lifted to quantize every one."""
    cache: dict[str, object] = {}

    def load(mode: str):
        """`mode`, or "int8 <kernel>": int8 with every matrix on that kernel ("int8" alone: on the
        kernel this CPU's int8 uses, VNNI where it runs, else FBGEMM)."""
        if mode not in cache:
            with pytest.MonkeyPatch.context() as patch:
                if mode == BF16_ACTIVATIONS:
                    patch.setattr(int8, "MIN_WEIGHT", 1 << 40)
                    patch.setattr(int8, "MIN_WEIGHT_VNNI", 1 << 40)
                    patch.setattr(int8, "MIN_WEIGHT_BF16_ACTIVATIONS", 0)
                else:
                    patch.setattr(int8, "MIN_WEIGHT", 0)
                    patch.setattr(int8, "MIN_WEIGHT_VNNI", 1 << 40 if mode == FBGEMM else 0)
                cache[mode] = load_model(tiny_model_dir, device="cpu", precision=mode.split()[0])
        return cache[mode]

    return load


BF16_ACTIVATIONS = "int8 bf16-activations"
FBGEMM = "int8 fbgemm"
vnni_only = pytest.mark.skipif(not vnni.available(), reason="without the VNNI kernel, int8 is FBGEMM already")
native_bf16_only = pytest.mark.skipif(
    not int8.bf16_activations_available(), reason="the bf16-activations kernel is chosen only where bf16 is native"
)


def test_an_int8_layer_gives_each_row_what_it_gives_it_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 64, generator=generator) * 0.1, torch.randn(96, generator=generator)
    layer = int8.Int8Linear.from_float(weight, bias, transposed=False)
    rows = torch.randn(9, 64, generator=generator) * torch.logspace(-3, 2, 9)[:, None]  # very different scales
    rows[4] = 0.0
    together = layer(rows)
    alone = torch.cat([layer(rows[i : i + 1]) for i in range(len(rows))])
    assert torch.equal(together, alone)
    assert torch.equal(together[4], bias)
    exact = torch.nn.functional.linear(rows, weight, bias)
    assert ((together - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.05  # 8-bit weights, 7-bit rows


@pytest.mark.skipif(not hasattr(torch, "_weight_int8pack_mm"), reason="this torch build has no int8pack kernel")
def test_the_bf16_activations_kernel_is_close_to_fp32_and_keeps_its_layout() -> None:
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(64, 96, generator=generator) * 0.1, torch.randn(96, generator=generator)
    layer = int8.Int8Linear.from_float(weight, bias, transposed=True, kernel="bf16-activations")  # a Conv1D's (in, out)
    rows = torch.randn(5, 64, generator=generator)
    exact = rows @ weight + bias
    got = layer(rows)
    assert got.dtype == torch.float32 and got.shape == (5, 96)
    assert ((got - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.02  # 8-bit weights, bf16 rows and scales
    assert layer.float_weight().shape == weight.shape
    assert ((layer.float_weight() - weight).abs() <= weight.abs().amax(dim=0) / 127).all()


@native_bf16_only
def test_the_bf16_activations_kernel_gives_each_row_what_it_gives_it_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    for shape in [(96, 64), (768, 256), (256, 1024)]:
        weight = torch.randn(*shape, generator=generator) * 0.1
        layer = int8.Int8Linear.from_float(weight, None, transposed=False, kernel="bf16-activations")
        rows = torch.randn(11, shape[1], generator=generator) * torch.logspace(-3, 2, 11)[:, None]
        together = layer(rows)
        assert all(
            torch.equal(layer(rows[i : i + n]), together[i : i + n]) for n in (1, 2, 3, 8) for i in range(11 - n)
        )


def test_each_matrix_takes_the_kernel_its_size_pays_for(monkeypatch) -> None:
    monkeypatch.setattr(vnni, "available", lambda: True)
    assert int8.kernel_for(int8.MIN_WEIGHT) == "vnni" and int8.kernel_for(int8.MIN_WEIGHT_VNNI) == "vnni"
    assert int8.kernel_for(int8.MIN_WEIGHT_VNNI - 1) is None
    monkeypatch.setattr(vnni, "available", lambda: False)  # no VNNI or no compiler: torch's kernels
    monkeypatch.setattr(int8, "bf16_activations_available", lambda: True)
    assert int8.kernel_for(int8.MIN_WEIGHT) == "fbgemm"
    assert int8.kernel_for(int8.MIN_WEIGHT - 1) == "bf16-activations"
    assert int8.kernel_for(int8.MIN_WEIGHT_BF16_ACTIVATIONS - 1) is None
    assert int8.kernel_for(10, min_weight=0) == "fbgemm"
    monkeypatch.setattr(int8, "bf16_activations_available", lambda: False)  # emulated bf16: fp32 is faster
    assert int8.kernel_for(int8.MIN_WEIGHT - 1) is None and int8.kernel_for(int8.MIN_WEIGHT) == "fbgemm"


def test_int8_replaces_every_linear_and_keeps_no_fp32_copy_of_their_weights(
    loaded_in, tiny_model_dir, monkeypatch
) -> None:
    model = loaded_in("int8").model
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    quantized = [m for m in model.modules() if isinstance(m, int8.Int8Linear)]
    assert len(quantized) == 4 * model.config.n_layer + 1  # qkv, proj, fc, fc2 per block; the head
    fresh = load_model(tiny_model_dir, device="cpu", precision="fp32").model
    monkeypatch.setattr(int8, "bf16_activations_available", lambda: False)
    monkeypatch.setattr(vnni, "available", lambda: False)
    assert int8.quantize_linears(fresh) == 0  # at FBGEMM's size threshold, none of the tiny model's
    assert isinstance(model.lm_head, int8.Int8Linear)
    embeddings = model.transformer.wte  # the tied head's int8 rows, looked up and scaled
    stored = embeddings.rows if embeddings.packed is None else embeddings.packed
    assert isinstance(embeddings, int8.Int8Embedding) and stored.dtype == torch.int8
    ids = torch.tensor([[3, 0, 250]])
    exact = loaded_in("fp32").model.transformer.wte(ids)
    assert torch.equal(embeddings(ids), embeddings.float_weight()[ids])
    assert ((embeddings(ids) - exact).abs() <= exact.abs().amax(dim=-1, keepdim=True) / 254 + 1e-7).all()
    floats = sum(p.numel() for p in model.parameters())
    assert floats < load_model_parameters(loaded_in("fp32").model) * 0.25  # positions (most, here), norms, biases


def load_model_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_int8_logits_stay_close_to_fp32(loaded_in) -> None:
    ids = torch.randint(0, 300, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        exact = loaded_in("fp32").model(input_ids=ids).logits
        quantized = loaded_in("int8").model(input_ids=ids).logits
    assert ((quantized - exact).norm() / exact.norm()) < 0.05


@pytest.mark.parametrize(
    "own_attention",
    [False, pytest.param(True, marks=pytest.mark.skipif(not decode_attention.available(), reason="no kernel"))],
)
def test_the_lean_step_gives_hugging_faces_logits_for_a_row_alone(loaded_in, own_attention) -> None:
    """fp32: the decode step calls the model's own layers in its own order: bit for bit its forward
    with SDPA; within float rounding with Taleweaver's attention kernel (another summation order)."""
    loaded = loaded_in("fp32")
    model, ids = loaded.model, torch.tensor([[5, 17, 42, 9, 100]])
    step = DecodeStep(model)
    assert not step.own_attention  # fp32 keeps SDPA by default: Hugging Face's numbers to the bit
    step.own_attention = own_attention
    with torch.inference_mode():
        past = model(input_ids=ids[:, :-1], use_cache=True)
        expected = model(input_ids=ids[:, -1:], cache=past.cache, use_cache=True).logits[:, -1]
        again = model(input_ids=ids[:, :-1], use_cache=True)
        got = step([int(ids[0, -1])], [ids.shape[1]], again.cache)
    if own_attention:
        assert not torch.equal(got, expected) and torch.allclose(got, expected, rtol=0, atol=1e-5)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "mode",
    [
        "fp32",
        "bf16",
        "int8",
        pytest.param(FBGEMM, marks=vnni_only),
        pytest.param(BF16_ACTIVATIONS, marks=native_bf16_only),
    ],
)
def test_each_modes_batched_stories_are_the_stories_alone(loaded_in, mode) -> None:
    """Five stories, three arriving together and two joining while the others are written, through
    the continuous batch: each is the story it writes alone, in this precision (and alone through the
    static path, Hugging Face's `generate`)."""
    loaded = loaded_in(mode)
    assert loaded.precision.mode == mode.split()[0]
    if mode in (BF16_ACTIVATIONS, FBGEMM):
        kernels = {m.kernel for m in loaded.model.modules() if isinstance(m, int8.Int8Linear)}
        assert kernels == {mode.split()[1]}
    jobs = [RowJob(p, s, seed=7) for p, s in zip(PROMPTS, SETTINGS, strict=True)]
    alone = [_continuous(loaded, [job], [])[0] for job in jobs]
    assert alone == [generate_batch(loaded, [job])[0].continuation for job in jobs]
    assert _continuous(loaded, jobs[:3], jobs[3:]) == alone
    assert len(set(alone)) == len(alone) and all(alone)


def test_int8_and_fp32_write_different_stories_from_the_same_seed(loaded_in) -> None:
    """What the recipe's precision is for: a replay in another precision is another computation."""
    jobs = [RowJob(p, DecodingSettings(max_new_tokens=60), seed=3) for p in PROMPTS]
    fp32 = [_continuous(loaded_in("fp32"), [job], [])[0] for job in jobs]
    quantized = [_continuous(loaded_in("int8"), [job], [])[0] for job in jobs]
    assert fp32 != quantized


def _continuous(loaded, first: list[RowJob], later: list[RowJob]) -> list[str]:
    done: dict[int, str] = {}
    rows = [
        RowJob(j.prompt, j.settings, j.seed, on_done=lambda out, i=i: done.__setitem__(i, out.continuation))
        for i, j in enumerate(first + later)
    ]
    engine = ContinuousBatch(loaded, on_error=lambda job, exc: pytest.fail(f"{exc!r}"))
    engine.start(rows[: len(first)])
    worker = threading.Thread(target=engine.run)
    worker.start()
    for index, row in enumerate(rows[len(first) :]):
        while engine.stats.steps < 4 * (index + 1):
            time.sleep(0.001)
        assert engine.submit(row)
    worker.join(timeout=60)
    if later:
        assert max(engine.stats.batch_sizes) == len(rows)
    return [done[i] for i in range(len(rows))]


def test_why_on_an_int8_model_takes_gradients_through_a_float_copy_it_does_not_keep(loaded_in) -> None:
    from model.explain.importance import _low_precision_copies, explain, explainable

    loaded = loaded_in("int8")
    copy = explainable(loaded).model
    assert not int8.is_quantized(copy) and copy.lm_head.weight is copy.transformer.wte.weight
    assert not any(t.is_meta for t in [*copy.parameters(), *copy.buffers()])
    with torch.inference_mode():
        ids = torch.tensor([[5, 17, 42, 9]])
        assert ((copy(ids).logits - loaded.model(ids).logits).norm() / copy(ids).logits.norm()) < 0.05
    embeds = copy.get_input_embeddings()(ids).detach().requires_grad_(True)
    copy(inputs_embeds=embeds).logits[0, -1].sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="inference"):
        loaded.model(inputs_embeds=embeds)
    result = explain(loaded, "Once upon a time there lived", config=WhyConfig(), max_prompt_tokens=64, seed=0)
    assert [w.word for w in result.words] == ["Once", "upon", "a", "time", "there", "lived"]
    assert loaded.model not in _low_precision_copies


# `auto`: measured facts or fp32 ---------------------------------------------------------------------


def _gate(model_dir, **changes) -> None:
    modes = {
        "fp32": {"passed": True, "speedup": 1.0},
        "bf16": {"passed": True, "speedup": 1.5},
        "int8": {"passed": True, "speedup": 1.3},
    }
    for mode, fields in changes.pop("modes", {}).items():
        modes[mode].update(fields)
    report = {
        "weights_sha256": precision.weights_fingerprint(model_dir),
        "cpu": precision.cpu_signature(),
        "modes": modes,
    }
    report.update(changes)
    (model_dir / precision.GATE_FILE).write_text(json.dumps(report), encoding="utf-8")


@pytest.fixture
def gated_dir(tiny_model_dir, tmp_path):
    import shutil

    return shutil.copytree(tiny_model_dir, tmp_path / "model")


CPU = torch.device("cpu")


def test_auto_without_a_gate_keeps_fp32_and_says_why(gated_dir) -> None:
    choice = precision.choose("auto", gated_dir, CPU)
    assert choice.mode == "fp32" and "no precision gate" in choice.reason


def test_auto_takes_the_fastest_mode_that_passed_and_this_cpu_runs_natively(gated_dir, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))  # no bf16 instructions
    _gate(gated_dir)
    choice = precision.choose("auto", gated_dir, CPU)
    assert choice.mode == "int8" and "1.30x" in choice.reason
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert precision.choose("auto", gated_dir, CPU).mode == "bf16"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"modes": {"int8": {"passed": False}}}, "no lower precision passed"),
        ({"modes": {"int8": {"speedup": 1.01}}}, "not faster"),
        ({"cpu": "another CPU"}, "another CPU"),
        ({"weights_sha256": "0" * 64}, "other weights"),
    ],
)
def test_auto_keeps_fp32_when_the_facts_are_missing_or_against(gated_dir, monkeypatch, changes, reason) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    changes = {**changes, "modes": {"bf16": {"passed": False}, **changes.get("modes", {})}}
    _gate(gated_dir, **changes)
    choice = precision.choose("auto", gated_dir, CPU)
    assert choice.mode == "fp32" and reason in choice.reason


def test_auto_reads_the_report_of_this_cpu_among_several(gated_dir, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    fingerprint = precision.weights_fingerprint(gated_dir)
    passed = {"fp32": {"passed": True, "speedup": 1.0}, "int8": {"passed": True}}
    here = {
        "cpu": precision.cpu_signature(),
        "weights_sha256": fingerprint,
        "modes": passed | {"int8": {"passed": True, "speedup": 1.4}},
    }
    there = {
        "cpu": "another CPU",
        "weights_sha256": fingerprint,
        "modes": passed | {"int8": {"passed": True, "speedup": 0.9}},
    }
    gate_file = gated_dir / precision.GATE_FILE
    gate_file.write_text(json.dumps({"reports": [here, there]}), encoding="utf-8")
    choice = precision.choose("auto", gated_dir, CPU)
    assert choice.mode == "int8" and "1.40x" in choice.reason
    gate_file.write_text(json.dumps({"reports": [there]}), encoding="utf-8")
    choice = precision.choose("auto", gated_dir, CPU)
    assert choice.mode == "fp32" and "another CPU" in choice.reason
    # This CPU, measured with an earlier version of the int8 kernels: said as such.
    earlier = here | {"cpu": precision.cpu_signature().rsplit(" | int8 ", 1)[0] + " | int8 older-kernels"}
    gate_file.write_text(json.dumps({"reports": [earlier, there]}), encoding="utf-8")
    choice = precision.choose("auto", gated_dir, CPU)
    assert choice.mode == "fp32" and "other int8 kernels" in choice.reason
    gate_file.write_text("{not json", encoding="utf-8")
    assert precision.choose("auto", gated_dir, CPU).mode == "fp32"


def test_a_gated_model_loads_in_autos_choice_and_says_so(gated_dir, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(int8, "MIN_WEIGHT", 0)
    _gate(gated_dir)
    loaded = load_model(gated_dir, device="cpu")
    assert loaded.precision.mode == "int8" and int8.is_quantized(loaded.model)
    assert load_model(gated_dir, device="cpu", precision="fp32").precision.mode == "fp32"


def test_precision_and_an_explicit_dtype_must_agree(tiny_model_dir) -> None:
    assert load_model(tiny_model_dir, dtype="bfloat16").precision.mode == "bf16"
    with pytest.raises(ModelLoadError, match="model.dtype: auto"):
        load_model(tiny_model_dir, dtype="bfloat16", precision="int8")


async def test_the_service_says_its_precision_in_each_result_and_in_the_metrics(loaded_in) -> None:
    from prometheus_client import REGISTRY

    from core.config import Config, ServiceConfig
    from core.service import StoryRequest
    from core.wire import story_result_from_json, story_result_to_json
    from model.service import ModelService

    service = ModelService(loaded_in("int8"), Config(service=ServiceConfig(batch_window_ms=0.0)))
    await service.start()
    try:
        stream = await service.story(StoryRequest(1, "Once upon a time", DecodingSettings(max_new_tokens=5), seed=1))
        result = await stream.result()
    finally:
        await service.close()
    assert result.precision == "int8"
    assert story_result_from_json(story_result_to_json(result)).precision == "int8"  # across the wire (Ray Serve)
    assert REGISTRY.get_sample_value("taleweaver_model_precision", {"precision": "int8"}) == 1.0
    assert REGISTRY.get_sample_value("taleweaver_model_precision", {"precision": "fp32"}) is None


def test_the_gate_measures_each_mode_against_fp32_and_auto_reads_its_report(
    gated_dir, tmp_path, capsys, monkeypatch
) -> None:
    from model import precision_gate
    from tests.tiny_model import TINY_TEXT

    monkeypatch.setattr(int8, "MIN_WEIGHT", 0)  # the tiny model's matrices are all below it

    held_out = tmp_path / "held-out.txt"
    held_out.write_text("\n<|endoftext|>\n".join([TINY_TEXT] * 3), encoding="utf-8")
    # Reports already there: another CPU's on these weights (kept), one on other weights (dropped)
    # and this CPU's own (replaced).
    fingerprint = precision.weights_fingerprint(gated_dir)
    elsewhere = {"cpu": "another CPU", "weights_sha256": fingerprint, "modes": {"fp32": {"passed": True}}}
    stale = {"cpu": "a third CPU", "weights_sha256": "0" * 64, "modes": {"fp32": {"passed": True}}}
    old_here = {"cpu": precision.cpu_signature(), "weights_sha256": fingerprint, "modes": {}, "written_at": "old"}
    gate_file = gated_dir / precision.GATE_FILE
    gate_file.write_text(json.dumps({"reports": [elsewhere, stale, old_here]}), encoding="utf-8")
    argv = [str(gated_dir), "--eval", str(held_out), "--modes", "int8", "--new-tokens", "6", "--rounds", "1"]
    assert precision_gate.main(argv) == 0
    reports = json.loads(gate_file.read_text(encoding="utf-8"))["reports"]
    assert [r["cpu"] for r in reports] == ["another CPU", precision.cpu_signature()]
    report = reports[-1]
    assert report["written_at"] != "old" and precision.read_gate(gated_dir) == report
    assert report["weights_sha256"] == precision.weights_fingerprint(gated_dir)
    assert report["cpu"] == precision.cpu_signature()
    fp32, quantized = report["modes"]["fp32"], report["modes"]["int8"]
    assert fp32["increase_over_fp32"] == {str(held_out): 0.0} and fp32["speedup"] == 1.0
    assert quantized["identical_alone_and_batched"] == [16, 16]  # 8 prompts, greedy and sampling
    increase = quantized["increase_over_fp32"][str(held_out)]
    assert quantized["bits_per_byte"][str(held_out)] > 0 and increase != 0.0
    assert quantized["passed"] == (increase <= precision.MAX_BPB_INCREASE)
    assert set(quantized["tokens_per_s"]) == {"1", "8"} and quantized["speedup"] > 0
    printed = capsys.readouterr().out
    assert "| int8 |" in printed and "`model.precision: auto` here:" in printed
    expected = "int8" if quantized["passed"] and quantized["speedup"] >= precision.MIN_SPEED_GAIN else "fp32"
    assert load_model(gated_dir, device="cpu").precision.mode == expected
