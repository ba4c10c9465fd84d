"""A lean decoding step for GPT-2-architecture models: the engine's one token per row, without
Hugging Face's per-call machinery, and with attention that does not depend on the batch.

`GPT2LMHeadModel.forward` spends more time deciding what to do than the shipped 5.4M model spends
multiplying: output containers, mask construction, cache dispatch, attention-interface lookup, a
dozen views per layer. For one row on that model the model call took 3.3 ms against 2.5 ms for the
same operations called here (`bench/peers.py`). This module calls the model's own layers in the
model's own order (its `Conv1D`s or their int8 or oneDNN replacements, its activation, its layer
norms, its LM head), so a row's numbers are exactly those of Hugging Face's forward pass for that
row alone.

Attention is where a batch changes a row's numbers: rows are left-padded to share the cache, and
SDPA's sums over the positions then run in other vector lanes than they would alone, so the last
bits differ. In fp32 that rarely flips a token; in int8 or bf16 a last-bit difference can cross a
rounding step, and stories changed (21/24 alone vs batched in int8, `bench/peers.py`). So rows are
attended in runs that share their padding, each over its own positions only (views, no copies):
the same SDPA call, on the same numbers, as alone. A batch whose rows all have the same length is
one call; eight stories of eight lengths are eight calls per layer (GPT-2 small: about 2 ms of a
50 ms step).

In int8 on a CPU with AVX-512 VNNI, Taleweaver's own kernels take over where they run: attention
for every row in one call (`model.decode_attention`), and where every matrix is on the int8
kernel, each block as one C call (`model.fused_blocks`). Both keep each row's numbers independent
of its batch; neither is Hugging Face's to the last bit, which is why fp32 keeps the path above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn import Module
from transformers import DynamicCache, GPT2LMHeadModel, PreTrainedModel

from model import decode_attention, int8
from model.fused_blocks import FusedBlocks
from model.kv_cache import GrowingLayer


@dataclass(frozen=True)
class _Block:
    """One GPT-2 block's layers, looked up once: `nn.Module.__getattr__` on every step was a tenth of
    the shipped model's step (39,000 lookups in 417 steps, cProfile)."""

    ln_1: tuple
    attention: Module
    c_attn: Module
    attn_proj: Module
    ln_2: tuple
    c_fc: Module
    act: Module
    mlp_proj: Module

    @classmethod
    def of(cls, block: Module) -> _Block:
        attention, mlp = block.attn, block.mlp
        return cls(
            _norm(block.ln_1),
            attention,
            attention.c_attn,
            attention.c_proj,
            _norm(block.ln_2),
            mlp.c_fc,
            mlp.act,
            mlp.c_proj,
        )


def _norm(layer: Module) -> tuple:
    """A `LayerNorm`'s arguments to `F.layer_norm`, what its forward passes."""
    return (layer.normalized_shape, layer.weight, layer.bias, layer.eps)


class DecodeStep:
    """One decoding step of a GPT-2 model over a `DynamicCache` whose rows are left-padded."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        self.model = model
        self.body = model.transformer
        self.blocks = [_Block.of(block) for block in self.body.h]
        self.ln_f = _norm(self.body.ln_f)
        self.heads = model.config.n_head
        self.head_dim = model.config.n_embd // model.config.n_head
        self.device = model.transformer.wpe.weight.device
        self.own_attention = int8.is_quantized(model) and decode_attention.supports(
            self.head_dim, model.transformer.wpe.weight.dtype, self.device
        )
        """Taleweaver's attention kernel (`model.decode_attention`) instead of SDPA run by run: in int8
        only, whose numbers are Taleweaver's own and gated; fp32 keeps Hugging Face's to the bit."""
        self.fused = FusedBlocks(model) if self.own_attention and FusedBlocks.supports(model) else None
        """Each block as one C call (`model.fused_blocks`), where the whole model is on the int8 kernel."""

    @staticmethod
    def supports(model: PreTrainedModel) -> bool:
        """GPT-2 decoder-only models with SDPA attention (the bot's models); others use their forward."""
        config = model.config
        return (
            isinstance(model, GPT2LMHeadModel)
            and not config.add_cross_attention
            and config._attn_implementation == "sdpa"
        )

    def replaces_forward(self) -> bool:
        """Whether the model's forward is still its class's own, which this step reproduces. A wrapped
        forward (`model.compile`'s `torch.compile`, an injected fault or delay in a test) is called as is."""
        return getattr(self.model.forward, "__func__", None) is type(self.model).forward

    def __call__(self, tokens: Sequence[int], lengths: Sequence[int], kv: DynamicCache) -> torch.Tensor:
        """Next-token logits (rows, vocabulary) for each row's last token.

        `tokens`: the token each row feeds; `lengths`: each row's length with that token (its
        position is length − 1, and its past is the last length − 1 positions of the cache).
        Layers are called through `forward` (no module hooks: the model is the bot's, in eval mode,
        where GPT-2's dropouts return their input as it is, so they are left out).
        """
        body, rows = self.body, len(tokens)
        ids, positions = torch.tensor([tokens, lengths], device=self.device)
        hidden = (body.wte.forward(ids) + body.wpe.forward(positions - 1))[:, None, :]
        width = kv.get_seq_length() + 1
        pads = [width - length for length in lengths]
        own = decode_attention.StepAttention(pads, width) if self.own_attention else None
        if own is not None and self.fused is not None and all(isinstance(x, GrowingLayer) for x in kv.layers):
            hidden = self.fused(hidden.view(rows, -1), kv.layers, own.padding, width)
            return self.model.lm_head.forward(F.layer_norm(hidden, *self.ln_f))
        runs = None if own else _runs(pads)
        shape = (rows, 1, self.heads, self.head_dim)
        for block, layer in zip(self.blocks, kv.layers, strict=True):
            attention = block.attention
            query, key, value = block.c_attn.forward(F.layer_norm(hidden, *block.ln_1)).split(
                attention.split_size, dim=2
            )
            keys, values = layer.update(key.view(shape).transpose(1, 2), value.view(shape).transpose(1, 2))
            if own is not None:
                attended = own(query.view(rows, -1), keys, values, attention.scaling)
                hidden = block.attn_proj.forward(attended.view(rows, 1, -1)) + hidden
            else:
                attended = _attend_by_runs(query.view(shape).transpose(1, 2), keys, values, runs, attention.scaling)
                hidden = block.attn_proj.forward(attended.transpose(1, 2).reshape(rows, 1, -1)) + hidden
            inner = block.act.forward(block.c_fc.forward(F.layer_norm(hidden, *block.ln_2)))
            hidden = block.mlp_proj.forward(inner) + hidden
        return self.model.lm_head.forward(F.layer_norm(hidden, *self.ln_f))[:, -1, :]


def _attend_by_runs(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, runs: list[tuple[int, int, int]], scale: float
) -> torch.Tensor:
    """SDPA for each run of equally padded rows over its own positions (the same call as alone)."""
    parts = [
        F.scaled_dot_product_attention(
            query[first:last], keys[first:last, :, pad:], values[first:last, :, pad:], scale=scale
        )
        for first, last, pad in runs
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _runs(pads: Sequence[int]) -> list[tuple[int, int, int]]:
    """Consecutive rows with the same padding, as (first, last + 1, padding)."""
    runs: list[tuple[int, int, int]] = []
    for row, pad in enumerate(pads):
        if runs and runs[-1][2] == pad:
            runs[-1] = (runs[-1][0], row + 1, pad)
        else:
            runs.append((row, row + 1, pad))
    return runs
