"""GPT-2 blocks as one C call each (model/fused_blocks.py, model/native/block_step.c): the lean
step's logits and cache within float rounding of the same step through PyTorch's layers, and each
row the same alone and in a batch of other rows."""

from __future__ import annotations

import copy

import pytest
import torch

from model import int8
from model.fused_blocks import FusedBlocks
from model.kv_cache import growing
from model.loading import load_model
from model.step import DecodeStep

PROMPTS = [[5, 17, 42, 9, 100], [7, 3], [250, 11, 12, 13, 14, 15, 16, 1]]


@pytest.fixture(scope="module")
def int8_model(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8, "MIN_WEIGHT_VNNI", 0)
        model = load_model(tiny_model_dir, device="cpu", precision="int8").model
    if not FusedBlocks.supports(model):
        pytest.skip("no AVX-512 VNNI CPU or no C compiler: the blocks stay in PyTorch")
    return model


def _prefilled(model, prompt: list[int]):
    with torch.inference_mode():
        return growing(model(input_ids=torch.tensor([prompt]), use_cache=True).cache, row_room=4)


def test_a_fused_step_matches_the_step_through_pytorchs_layers(int8_model) -> None:
    fused = DecodeStep(int8_model)
    layered = DecodeStep(int8_model)
    layered.fused = None
    assert fused.fused is not None
    prompt = PROMPTS[0]
    kv_fused, kv_layered = _prefilled(int8_model, prompt), _prefilled(int8_model, prompt)
    with torch.inference_mode():
        for token, length in ((77, len(prompt) + 1), (78, len(prompt) + 2), (79, len(prompt) + 3)):
            got = fused([token], [length], kv_fused)
            expected = layered([token], [length], kv_layered)
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
    for a, b in zip(kv_fused.layers, kv_layered.layers, strict=True):
        assert a.keys.shape == b.keys.shape
        assert torch.allclose(a.keys, b.keys, atol=1e-4) and torch.allclose(a.values, b.values, atol=1e-4)


def test_each_row_of_a_fused_step_is_what_it_is_alone(int8_model) -> None:
    step = DecodeStep(int8_model)
    alone = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            kv = _prefilled(int8_model, prompt)
            alone.append(step([77], [len(prompt) + 1], kv)[0])
        # the same rows batched: left-padded into one growing cache, as the engine joins them
        kv = _prefilled(int8_model, PROMPTS[0])
        for prompt in PROMPTS[1:]:
            other = _prefilled(int8_model, prompt)
            for layer, new in zip(kv.layers, other.layers, strict=True):
                layer.add_row(new.keys, new.values)
        together = step([77] * len(PROMPTS), [len(p) + 1 for p in PROMPTS], kv)
    assert all(torch.equal(together[i], alone[i]) for i in range(len(PROMPTS)))


def test_a_model_with_a_float_layer_keeps_pytorchs_blocks(int8_model) -> None:
    mixed = copy.deepcopy(int8_model)
    mixed.transformer.h[0].mlp.act = torch.nn.GELU()  # the exact GELU, not GPT-2's tanh one
    assert not FusedBlocks.supports(mixed) and DecodeStep(mixed).fused is None
