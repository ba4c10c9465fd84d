"""Int8 weights for GPT-2's big matrices on the CPU: FBGEMM's dynamic int8 linear, batch-invariant.

A decoding step reads every weight once per token, so on the CPU it is bound by memory: int8
weights are a quarter of fp32's bytes. `torch.ao`'s dynamic quantization runs them through
FBGEMM: weights int8 with one scale per output channel, activations quantized on the fly to
uint8, an integer product, then back to fp32. On this project's AVX2 EPYC, one thread, GPT-2
small's 768 → 2304 layer took 0.097 ms for one row against 0.233 ms in fp32, and its 50257 × 768
LM head 2.9 ms against 8.8 (`bench/peers.py` has the whole-model numbers).

Plain dynamic quantization picks one activation scale for the whole input tensor, from its
smallest and largest value: a row's numbers then depend on the other rows of its batch, so a
story would change with who shares its step (`bench/peers.py` measured 21/24 stories equal alone
and in a batch). Here each row is divided by its own largest magnitude before the product and
multiplied back after, and one guard row [1, −1, 0…] is appended, so the tensor's range is
always exactly [−1, 1] and the scale the same whatever the batch: every row is quantized as it
would be alone, the integer product is exact, and the rescaling is per element. A row's output is
then bit for bit the same in any batch (tested), which is what lets the continuous batch keep
its promise in int8 too.

FBGEMM's `reduce_range` (7-bit activations) is kept: AVX2's 8-bit multiply-add saturates in
16 bits with full-range inputs. The error this costs is what the precision gate measures.

The fp32 weights of the quantized layers are dropped (the point of int8 is memory as well as
speed); `float_copy` rebuilds a float model from the int8 weights for what needs gradients
(/why).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

MIN_WEIGHT = 1 << 20
"""Smaller matrices keep fp32: for them the per-row scaling around the product (four small
operations) costs more than the bytes saved. On the shipped 4 × 256 model, one story, engine steps
against fp32 (7 interleaved rounds): every layer in int8 1.12×, only its 8192 × 256 head 0.90×.
GPT-2 small quantizes all but its 768 × 768 attention outputs (0.64× and 0.65× with them)."""
TINY = 1e-30
"""A row of zeros is divided by this instead of by zero (its product is zero either way)."""


def available() -> bool:
    """Whether this torch build has FBGEMM's int8 kernels (x86 CPU builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W in int8 (per output channel) and x quantized per row; inference only.

    `transposed` says whether the float layer it replaced was a GPT-2 `Conv1D` (weight stored
    (in, out)) or an `nn.Linear` (out, in), so `float_module` can rebuild the same kind of layer.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, transposed: bool) -> None:
        super().__init__()
        matrix = (weight.t() if transposed else weight).detach().float().contiguous()
        self.out_features, self.in_features = matrix.shape
        self.transposed = transposed
        scales = (matrix.abs().amax(dim=1) / 127).clamp(min=TINY).double()
        zeros = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.13 deprecates qint8 tensors; FBGEMM's packing still takes one
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            quantized = torch.quantize_per_channel(matrix, scales, zeros, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        guard = torch.zeros(1, self.in_features)
        guard[0, 0], guard[0, 1] = 1.0, -1.0
        self.register_buffer("guard", guard, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("int8 layers are for inference; take gradients through `float_copy(model)`")
        rows = x.reshape(-1, self.in_features).float()
        peak = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True).clamp_(min=TINY)
        product = torch.ops.quantized.linear_dynamic(torch.cat([rows / peak, self.guard]), self.packed, True)
        product = product[:-1]
        out = product.mul_(peak) if self.bias is None else torch.addcmul(self.bias, product, peak)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def float_weight(self) -> torch.Tensor:
        """The dequantized weight, in the layout of the layer it replaced."""
        weight, _ = torch.ops.quantized.linear_unpack(self.packed)
        matrix = weight.dequantize()
        return matrix.t().contiguous() if self.transposed else matrix

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


def quantize_linears(model: PreTrainedModel, min_weight: int | None = None) -> int:
    """Swap the model's GPT-2 `Conv1D` layers and its LM head of at least `min_weight` entries
    (default `MIN_WEIGHT`) for `Int8Linear`; returns how many.

    The LM head usually shares its matrix with the token embeddings: the embeddings keep the fp32
    matrix (a lookup reads one row a token) and the head gets its own int8 copy.
    """
    head = model.get_output_embeddings()
    min_weight = MIN_WEIGHT if min_weight is None else min_weight
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                transposed = True
            elif child is head and isinstance(child, nn.Linear):
                transposed = False
            else:
                continue
            if child.weight.numel() < min_weight:
                continue
            setattr(parent, name, Int8Linear(child.weight, child.bias, transposed=transposed))
            swapped += 1
    return swapped


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, Int8Linear) for module in model.modules())


def float_copy(model: PreTrainedModel, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A frozen float model with the int8 model's (dequantized) weights, for passes that need
    gradients. The head is tied to the embeddings again when the config ties them, so the copy
    costs the block weights in `dtype` once, not the vocabulary matrix twice."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            state[f"{name}.weight"] = module.float_weight()
            if module.bias is not None:
                state[f"{name}.bias"] = module.bias
    for name, tensor in model.state_dict().items():
        state.setdefault(name, tensor)
    with torch.device("meta"):
        copy = type(model)(model.config)
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop(_head_weight_name(copy), None)
        copy.load_state_dict(state, strict=False, assign=True)
        copy.tie_weights()
    else:
        copy.load_state_dict(state, assign=True)
    copy.generation_config = model.generation_config
    return copy.to(dtype).eval().requires_grad_(False)


def _head_weight_name(model: PreTrainedModel) -> str:
    head = model.get_output_embeddings()
    return next(f"{name}.weight" for name, module in model.named_modules() if module is head)
