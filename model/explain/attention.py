"""The attention the last position pays to each prompt token, per layer and head (the `/why view:attention` data).

transformers 5 runs GPT-2 with SDPA attention by default, which never materialises the attention
weights, so `output_attentions=True` silently gives an empty tuple (transformers 5.24) unless the
model was loaded with `attn_implementation="eager"` (or switched with `set_attn_implementation`,
which changes the shared model for every other request too). Instead, a forward hook on each attention block's
`c_attn` projection records the queries and keys, and the weights of the one row we need (the
last query) are recomputed from them: softmax(q_last · Kᵀ · scaling), exactly what the eager
path computes (the last position may attend to every position, so the causal mask is a no-op).
The hooks live only for the one forward pass; the model is not reloaded or reconfigured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention


def attention_modules(model: PreTrainedModel) -> list[GPT2Attention]:
    """The self-attention modules of a GPT-2-architecture model, in layer order."""
    modules = [m for m in model.modules() if isinstance(m, GPT2Attention) and not m.is_cross_attention]
    if not modules:
        raise ValueError(f"the attention view supports GPT-2-architecture models, not {type(model).__name__}")
    return modules


def last_token_attention(model: PreTrainedModel, input_ids: torch.Tensor) -> np.ndarray:
    """Attention weights from the last position to every token: float32 array (layers, heads, T).

    `input_ids` has shape (T,). Each row (layer, head) sums to 1.
    """
    modules = attention_modules(model)
    captured: dict[int, torch.Tensor] = {}

    def recorder(layer: int) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            captured[layer] = output[0].detach()

        return hook

    handles = [m.c_attn.register_forward_hook(recorder(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            model.base_model(input_ids=input_ids[None].to(model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return np.stack([_last_row(m, captured[i]) for i, m in enumerate(modules)])


def _last_row(module: GPT2Attention, qkv: torch.Tensor) -> np.ndarray:
    query, key, _ = qkv.float().split(module.split_size, dim=-1)
    heads, head_dim = module.num_heads, module.head_dim
    q_last = query[-1].view(heads, head_dim)
    keys = key.view(-1, heads, head_dim).transpose(0, 1)
    scores = torch.einsum("hd,htd->ht", q_last, keys) * module.scaling
    return torch.softmax(scores, dim=-1).cpu().numpy()
