"""GPT-2's linear layers through oneDNN with prepacked weights, for decoding batches on the CPU.

MKL's fp32 matmul (what `torch.addmm` and `F.linear` call on the CPU) is slow for the 2–16 rows
of a decoding batch: on this project's Xeon, one thread, eight rows through GPT-2 small's
768 → 3072 layer took 1.0 ms against 0.34 ms for one row, and the 50257 × 768 LM head 35 ms
against 11. oneDNN with the weight reordered once into its blocked layout (the kernel PyTorch's
own `torch.compile` uses for CPU linears, `mkldnn._linear_pointwise`) does eight rows in 0.49 ms
and 14.6 ms, so batching eight stories costs much less than eight times one. One or two rows, and small
matrices, keep the plain matmul, which is faster for them (`MIN_ROWS`, `MIN_WEIGHT`).

Each output is still a row of the weight times the input: only the blocking of the product
changes, so outputs differ from MKL's in their last bits (at most ~1e-4 on GPT-2-sized layers), as
between any two batch sizes (`bench/exactness.py` checks that stories still come out the same).

Only inference uses the packed weights. A pass that needs gradients through the input (/why),
another dtype or device, or a weight that changed since it was packed (training, a copy converted
to bf16) takes the layer's plain forward. The packed weights are a second copy of each matrix
(about the model's size again), kept outside the module so that a deep copy of the model does not
carry them.
"""

from __future__ import annotations

import logging
import types
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from model.lm_head import sliced_linear

log = logging.getLogger(__name__)

PACKED_FOR_ROWS = 8
"""The batch size oneDNN is told to expect when it reorders a weight (any size works)."""
MIN_ROWS = 3
"""Fewer rows take the plain matmul: for one or two, MKL is as fast or faster (its call costs less)."""
MIN_WEIGHT = 1 << 19
"""Smaller matrices are not packed: for the shipped model's 256 × 1024 layers oneDNN's call costs
more than the product (0.05 against 0.04 ms at eight rows); from GPT-2's 768 × 768 up it pays."""


@dataclass(frozen=True)
class _Packed:
    weight: torch.Tensor
    """The (out, in) matrix in oneDNN's layout (an opaque tensor)."""
    source: nn.Parameter
    version: int
    """`source._version` when packed: an in-place update of the weight makes the packing stale."""


_packed: weakref.WeakKeyDictionary[nn.Module, _Packed] = weakref.WeakKeyDictionary()


def available() -> bool:
    """Whether this torch build has the oneDNN linear ops (CPU builds with mkldnn do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def prepack_linears(model: nn.Module) -> int:
    """Route the model's Conv1D layers and its LM head through prepacked oneDNN weights.

    Returns how many layers were packed: 0 where oneDNN is missing or the model is not fp32 on
    the CPU (a GPU, or half precision, keeps its own kernels).
    """
    if not available():
        return 0
    head = model.get_output_embeddings()
    count = 0
    for module in model.modules():
        if isinstance(module, Conv1D):
            matrix, forward = module.weight.t(), _conv1d_forward
        elif module is head and isinstance(module, nn.Linear):
            matrix, forward = module.weight, _linear_forward
        else:
            continue
        if matrix.device.type != "cpu" or matrix.dtype != torch.float32 or matrix.numel() < MIN_WEIGHT:
            continue
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(matrix.detach().contiguous(), PACKED_FOR_ROWS)
        except RuntimeError:  # an unusual build: keep MKL rather than fail to load
            log.warning("oneDNN could not pack a %s weight; the plain matmul is used", type(module).__name__)
            return count
        _packed[module] = _Packed(packed, module.weight, module.weight._version)
        module.forward = types.MethodType(forward, module)
        count += 1
    return count


def _usable(module: nn.Module, x: torch.Tensor) -> _Packed | None:
    packed = _packed.get(module)
    if (
        packed is None
        or x.numel() < MIN_ROWS * x.shape[-1]
        or x.dtype != torch.float32
        or x.device.type != "cpu"
        or (x.requires_grad and torch.is_grad_enabled())
        or module.weight is not packed.source
        or module.weight._version != packed.version
        or module.weight.dtype != torch.float32
    ):
        return None
    return packed


def _conv1d_forward(self: Conv1D, x: torch.Tensor) -> torch.Tensor:
    packed = _usable(self, x)
    if packed is None:
        return Conv1D.forward(self, x)
    return torch.ops.mkldnn._linear_pointwise(x, packed.weight, self.bias, "none", [], "")


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    packed = _usable(self, x)
    if packed is None:  # what the head did before it was packed (`model.lm_head`)
        return sliced_linear(x, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed.weight, self.bias, "none", [], "")
