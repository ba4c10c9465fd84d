"""oneDNN prepacked linears (model/prepacked.py): the same numbers as the plain layers, used only
where they apply (inference, fp32, CPU, enough rows, unchanged weights)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from core.settings import DecodingSettings
from model import prepacked
from model.engine import ContinuousBatch
from model.generation import RowJob, generate_batch
from model.loading import load_model

pytestmark = pytest.mark.skipif(not prepacked.available(), reason="this torch build has no oneDNN")


@pytest.fixture
def packed_loaded(tiny_model_dir, monkeypatch):
    """The tiny model loaded as the bot loads it, with every layer big enough to be packed."""
    monkeypatch.setattr(prepacked, "MIN_WEIGHT", 0)
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    layers = [m for m in loaded.model.modules() if m in prepacked._packed]
    assert len(layers) == sum(isinstance(m, Conv1D) for m in loaded.model.modules()) + 1  # and the head
    return loaded


def _calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = prepacked.torch.ops.mkldnn._linear_pointwise

    class Ops:
        def _linear_pointwise(self, *args):
            calls.append(args[0].numel() // args[0].shape[-1])
            return real(*args)

    monkeypatch.setattr(prepacked.torch.ops, "mkldnn", Ops())
    return calls


def test_packed_layers_give_the_plain_layers_numbers(packed_loaded, tiny_loaded) -> None:
    ids = torch.randint(0, 300, (8, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        packed = packed_loaded.model(input_ids=ids).logits
        plain = tiny_loaded.model(input_ids=ids).logits
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)


def test_batched_stories_through_packed_layers_are_the_stories_alone(packed_loaded, monkeypatch) -> None:
    """Eight rows in the continuous batch go through oneDNN; one row alone does not (too few rows):
    each story is still the one it writes alone."""
    settings = [DecodingSettings(strategy="greedy", max_new_tokens=20), DecodingSettings(max_new_tokens=20)]
    prompts = ["Once upon a time", "The fox said", "Holmes looked at", "A king had", "The", "Hello there"]
    jobs = [RowJob(p, settings[i % 2], seed=i) for i, p in enumerate(prompts)]
    alone = [generate_batch(packed_loaded, [job])[0].continuation for job in jobs]
    calls = _calls(monkeypatch)
    done: dict[int, str] = {}
    engine = ContinuousBatch(packed_loaded, on_error=lambda job, exc: pytest.fail(str(exc)))
    engine.start(
        [
            RowJob(j.prompt, j.settings, j.seed, on_done=lambda out, i=i: done.__setitem__(i, out.continuation))
            for i, j in enumerate(jobs)
        ]
    )
    engine.run()
    assert [done[i] for i in range(len(jobs))] == alone
    assert calls and max(calls) >= len(jobs) and min(calls) >= prepacked.MIN_ROWS


def test_gradients_copies_and_changed_weights_take_the_plain_path(packed_loaded, monkeypatch) -> None:
    model = packed_loaded.model
    calls = _calls(monkeypatch)
    sliced = []
    monkeypatch.setattr(
        prepacked, "sliced_linear", lambda *args, real=prepacked.sliced_linear: sliced.append(1) or real(*args)
    )
    embeds = model.get_input_embeddings()(torch.randint(0, 300, (4, 6))).detach().requires_grad_(True)
    model(inputs_embeds=embeds).logits.sum().backward()  # /why: gradients through the input
    assert embeds.grad is not None and calls == []
    assert sliced, "the head's fallback is the sliced head it had before packing"
    twin = copy.deepcopy(model).to(torch.bfloat16)  # /why's low-precision copy
    with torch.inference_mode():
        twin(input_ids=torch.randint(0, 300, (4, 6)))
    assert calls == []
    with torch.inference_mode():
        model(input_ids=torch.randint(0, 300, (4, 6)))
    assert calls, "fp32 inference with 24 rows should use the packed weights"
    calls.clear()
    layer = next(m for m in model.modules() if isinstance(m, Conv1D))
    with torch.no_grad():
        layer.weight.mul_(2.0)  # a changed weight: its packing is stale
    with torch.inference_mode():
        x = torch.randn(4, layer.weight.shape[0])
        torch.testing.assert_close(layer(x), torch.addmm(layer.bias, x, layer.weight))
    assert calls == []


def test_the_config_switch_turns_packing_off(tiny_model_dir, monkeypatch) -> None:
    """`model.onednn_linears: false` (to save the packed copy's memory) keeps every plain layer."""
    monkeypatch.setattr(prepacked, "MIN_WEIGHT", 0)
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32", onednn_linears=False)
    assert not any(m in prepacked._packed for m in loaded.model.modules())
