"""GPT-2's blocks as one C call each for the lean step (`model/native/block_step.c`), where every
matrix of the model is on Taleweaver's int8 kernel and the cache grows in place.

A step of a small model is about a hundred PyTorch calls of a few microseconds; CTranslate2 runs
the same step in fused C++ (`bench/peers.py`). Here each block is one call: its layer norms,
products, attention, GELU and residuals run in C on the step's own buffers, and the new keys and
values are written into the cache there. Every operation works row by row, so a row's numbers are
the same alone and in any batch; they are not Hugging Face's to the last bit (its own layer norm,
exp and summation orders), which is why this is a choice of the int8 mode that its precision
gate measures, and never of fp32.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from model import int8
from model.native import library


class _Linear(ctypes.Structure):
    _fields_ = [
        ("packed", ctypes.c_void_p),
        ("blocks", ctypes.c_int64),
        ("in_features", ctypes.c_int64),
        ("out_features", ctypes.c_int64),
        ("scales", ctypes.c_void_p),
        ("sums", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
    ]


class _Block(ctypes.Structure):
    _fields_ = [
        ("ln_1_weight", ctypes.c_void_p),
        ("ln_1_bias", ctypes.c_void_p),
        ("ln_2_weight", ctypes.c_void_p),
        ("ln_2_bias", ctypes.c_void_p),
        ("ln_1_eps", ctypes.c_float),
        ("ln_2_eps", ctypes.c_float),
        ("c_attn", _Linear),
        ("attn_proj", _Linear),
        ("c_fc", _Linear),
        ("mlp_proj", _Linear),
    ]


def _linear(layer: nn.Module) -> _Linear:
    bias = layer.bias
    return _Linear(
        layer.packed.data_ptr(), layer.packed.shape[0], layer.in_features, layer.out_features,
        layer.scales.data_ptr(), layer.sums.data_ptr(), 0 if bias is None else bias.data_ptr(),
    )  # fmt: skip


def _eligible_block(block: nn.Module) -> bool:
    attention, mlp = block.attn, block.mlp
    linears = (attention.c_attn, attention.c_proj, mlp.c_fc, mlp.c_proj)
    act = mlp.act
    norms = (block.ln_1, block.ln_2)
    return (
        all(isinstance(layer, int8.Int8Linear) and layer.kernel == "vnni" for layer in linears)
        and isinstance(act, nn.GELU)
        and act.approximate == "tanh"
        and all(
            isinstance(norm, nn.LayerNorm)
            and norm.weight is not None
            and norm.bias is not None
            and norm.weight.dtype == torch.float32
            and norm.weight.is_contiguous()
            and norm.bias.is_contiguous()
            for norm in norms
        )
    )


class FusedBlocks:
    """The model's blocks bound to the C step: their tensors' pointers taken once (the tensors are
    held here, so the pointers stay valid; a model moved after this would need a new instance)."""

    def __init__(self, model: nn.Module) -> None:
        function = library.function("tw_model_step")
        if function is None:
            raise RuntimeError("the block kernel is not available on this machine")
        self._function = function
        body = model.transformer
        self.heads = model.config.n_head
        self.inner = body.h[0].mlp.c_fc.out_features
        count = len(body.h)
        self.scales = (ctypes.c_float * count)(*[float(block.attn.scaling) for block in body.h])
        self._held = [block for block in body.h]
        self.blocks = (_Block * count)(
            *[
                _Block(
                    block.ln_1.weight.data_ptr(),
                    block.ln_1.bias.data_ptr(),
                    block.ln_2.weight.data_ptr(),
                    block.ln_2.bias.data_ptr(),
                    block.ln_1.eps,
                    block.ln_2.eps,
                    _linear(block.attn.c_attn),
                    _linear(block.attn.c_proj),
                    _linear(block.mlp.c_fc),
                    _linear(block.mlp.c_proj),
                )  # fmt: skip
                for block in body.h
            ]
        )
        self._keys, self._values = (ctypes.c_void_p * count)(), (ctypes.c_void_p * count)()
        self._row_strides, self._head_strides = (ctypes.c_int64 * count)(), (ctypes.c_int64 * count)()

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether every block can take the C step (int8 on the VNNI kernel throughout, GPT-2's tanh GELU)."""
        body = getattr(model, "transformer", None)
        return (
            body is not None
            and library.function("tw_model_step") is not None
            and model.config.n_embd % model.config.n_head == 0
            and all(_eligible_block(block) for block in body.h)
        )

    def __call__(self, hidden: torch.Tensor, layers: list, pads: torch.Tensor, width: int) -> torch.Tensor:
        """hidden (rows, width) fp32, every block applied in place; `layers` the cache's `GrowingLayer`s
        (each advanced by one position here, all before the blocks run: see `tw_model_step`), `pads`
        each row's first position (int64)."""
        rows, e = hidden.shape
        if len(layers) != len(self.blocks):
            raise ValueError(f"{len(layers)} cache layers for {len(self.blocks)} blocks")
        for index, layer in enumerate(layers):
            keys, values = layer.advance()
            strides = keys.stride()
            if keys.shape[2] != width or strides != values.stride() or strides[3] != 1 or strides[2] * self.heads != e:
                raise ValueError("the block kernel takes the cache's own buffers, positions contiguous")
            self._keys[index], self._values[index] = keys.data_ptr(), values.data_ptr()
            self._row_strides[index], self._head_strides[index] = strides[0], strides[1]
        scratch = torch.empty(rows * (5 * e + self.inner) + width)
        status = self._function(
            self.blocks, len(self.blocks), hidden.data_ptr(), rows, e, self._keys, self._values, self._row_strides,
            self._head_strides, self.heads, width, pads.data_ptr(), self.scales, scratch.data_ptr(),
        )  # fmt: skip
        if status:
            raise RuntimeError(f"the block kernel failed ({status})")
        return hidden
