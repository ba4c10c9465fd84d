"""Load-time changes that make a step cheaper (model/lean_layers.py): aligned weights and the
one-kernel tanh GELU, with the model computing what it computed."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import NewGELUActivation

from model import lean_layers
from model.loading import load_model


def test_misaligned_weights_move_to_aligned_memory_with_their_values_and_ties() -> None:
    storage = torch.arange(1000, dtype=torch.float32)
    first, second = nn.Linear(16, 16), nn.Linear(16, 16)
    first.weight = nn.Parameter(storage[3:259].view(16, 16), requires_grad=False)  # 12 bytes past a boundary
    second.weight = first.weight  # tied, as GPT-2's head and token embeddings are
    first.register_buffer("table", storage[5:21])
    model = nn.Sequential(first, second)
    assert first.weight.data_ptr() % lean_layers.ALIGNMENT != 0
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert lean_layers.align_weights(model) == 2  # the tied weight once, and the buffer
    assert all(t.data_ptr() % lean_layers.ALIGNMENT == 0 for t in [*model.parameters(), *model.buffers()])
    assert second.weight is first.weight
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert lean_layers.align_weights(model) == 0


def test_gpt2s_gelu_becomes_one_kernel_of_the_same_function() -> None:
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).eval()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model(ids).logits
        assert lean_layers.fuse_gelu(model) == 2
        after = model(ids).logits
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5, rtol=0)


def test_a_loaded_model_has_aligned_weights_and_the_fused_gelu(tiny_model_dir) -> None:
    model = load_model(tiny_model_dir, device="cpu", precision="fp32").model
    assert all(t.data_ptr() % lean_layers.ALIGNMENT == 0 for t in [*model.parameters(), *model.buffers()])
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert model.lm_head.weight is model.transformer.wte.weight
