"""The sliced LM head (model/lm_head.py): same logits, same stories, only on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.settings import DecodingSettings
from model import lm_head
from model.generation import RowJob, generate_batch
from model.lm_head import slice_lm_head, sliced_linear


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 33])
@pytest.mark.parametrize("bias", [False, True])
def test_sliced_product_matches_the_plain_one(rows: int, bias: bool) -> None:
    """Any number of rows, slices that do not divide the vocabulary, with and without a bias."""
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(2, rows, 16, generator=generator)
    weight = torch.randn(1000, 16, generator=generator)
    b = torch.randn(1000, generator=generator) if bias else None
    torch.testing.assert_close(sliced_linear(x, weight, b, slice_rows=96), F.linear(x, weight, b))


def test_loaded_models_use_the_sliced_head_and_tell_the_same_stories(tiny_loaded, monkeypatch) -> None:
    """`load_model` installs it; with slices smaller than the tiny vocabulary, batched greedy and sampled
    stories are the ones the plain head writes, and a deep copy of the model gets its own head."""
    head = tiny_loaded.model.get_output_embeddings()
    assert head.forward.__func__ is lm_head._sliced_forward
    jobs = [
        RowJob(prompt, DecodingSettings(strategy=strategy, max_new_tokens=15), seed=i)
        for i, (prompt, strategy) in enumerate(
            [("Once upon a time", "greedy"), ("The fox said", "sampling"), ("Holmes looked at", "greedy")]
        )
    ]
    monkeypatch.setattr(lm_head, "SLICE_ROWS", 37)
    calls = []
    monkeypatch.setattr(F, "linear", lambda *args, real=F.linear: calls.append(1) or real(*args))
    sliced = [row.continuation for row in generate_batch(tiny_loaded, jobs)]
    assert len(calls) > 15 * head.weight.shape[0] // 37, "the head was not computed in slices"
    monkeypatch.undo()
    monkeypatch.setattr(head, "forward", lambda x: F.linear(x, head.weight, head.bias))
    plain = [row.continuation for row in generate_batch(tiny_loaded, jobs)]
    assert sliced == plain
    monkeypatch.undo()
    twin = copy.deepcopy(tiny_loaded.model)
    assert twin.get_output_embeddings().forward.__self__ is twin.get_output_embeddings()


def test_only_cpu_linear_heads_are_changed(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.lm_head = torch.nn.Identity()
    assert not slice_lm_head(model)
