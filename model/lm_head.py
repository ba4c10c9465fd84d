"""A faster LM head for small batches on the CPU: the vocabulary matrix multiplied in slices.

At batch 8 the LM head of GPT-2 small (a 50257 × 768 matrix) is a quarter of every decoding
step, and MKL's fp32 matmul for 2–16 rows runs it well below what the CPU can do; the same
product in 1024-row slices of the matrix is faster (docs/performance.md has the
numbers, measured by `bench/floor.py` and `bench/concurrency.py`).
The slices are views (no copy, no extra memory). One or two rows keep the plain call, which is
already the fastest way for them, so batch-1 decoding is unchanged.

Each logit is still one row of the matrix times the hidden state: only the blocking of the
product changes, so logits may differ from the plain call's in their last bits, as between
any two batch sizes (`bench/exactness.py` checks that stories still come out the same).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

SLICE_ROWS = 1024
"""Vocabulary rows per slice: the fastest of 1024–16384 measured at batch 8."""
PLAIN_UP_TO_ROWS = 2
"""Batches of at most this many positions use the plain product."""


def sliced_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, slice_rows: int = SLICE_ROWS
) -> torch.Tensor:
    """F.linear(x, weight, bias), computed slice by slice of the weight's rows when x has several rows."""
    if x.numel() // x.shape[-1] <= PLAIN_UP_TO_ROWS or weight.shape[0] <= slice_rows:
        return F.linear(x, weight, bias)
    parts = [
        F.linear(x, weight[start : start + slice_rows], None if bias is None else bias[start : start + slice_rows])
        for start in range(0, weight.shape[0], slice_rows)
    ]
    return torch.cat(parts, dim=-1)


def slice_lm_head(model: nn.Module) -> bool:
    """Make the model's LM head use `sliced_linear`, on the CPU only; True when it was changed.

    The head keeps its (tied) weight: only its forward changes (a method bound to the head, so a
    deep copy of the model gets one bound to its own copy), so weight tying, saving and
    `get_output_embeddings()` see the same module.
    """
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.weight.device.type != "cpu":
        return False
    head.forward = types.MethodType(_sliced_forward, head)
    return True


def _sliced_forward(head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return sliced_linear(x, head.weight, head.bias, SLICE_ROWS)
