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

Small matrices take a second kernel where the CPU multiplies bf16 natively (AVX-512-BF16 or
AMX): `torch._weight_int8pack_mm`, int8 weights with one scale per output channel and bf16
activations, no activation quantization at all. Each row is its own product (tested: bit for bit
the same alone and in any batch). On a Sapphire Rapids core the shipped 4 × 256 model's step took
1.3 ms with every matrix on it against 2.5 ms in fp32 and 2.3 ms through FBGEMM, whose per-row
scaling costs more than such a small product (`MIN_WEIGHT`). On GPT-2 small's matrices, read
from memory rather than from cache, it was no faster than FBGEMM for one row and 1.6× slower for
eight, so the big matrices keep FBGEMM.

Where the CPU has AVX-512 VNNI and a C compiler is there, every matrix of 4K entries up takes
Taleweaver's own kernel instead (`model/vnni.py`): it reads the weights at the memory's speed,
where these read them at half of it.

The fp32 weights of the quantized layers are dropped (the point of int8 is memory as well as
speed); `float_copy` rebuilds a float model from the int8 weights for what needs gradients
(/why).
"""

from __future__ import annotations

import ctypes
import gc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from model import cpu_features, vnni
from model.native import build

MIN_WEIGHT = 1 << 19
"""Smaller matrices keep fp32: for them the per-row scaling around the product (four small
operations) costs more than the bytes saved. On the shipped 4 × 256 model, one story, engine steps
against fp32 (7 interleaved rounds): every layer in int8 1.12×, only its 8192 × 256 head 0.90×.
GPT-2 small (matrices of 590K to 38.6M entries): 0.64× with all of them, 0.65× without the 768 × 768 ones."""
MIN_WEIGHT_BF16_ACTIVATIONS = 1 << 12
"""Where the CPU has native bf16, matrices of this many entries up to `MIN_WEIGHT` take int8
weights with bf16 activations (`Int8Linear`'s second kernel); smaller ones (none in a GPT-2 of
any useful size) keep fp32."""
MIN_WEIGHT_VNNI = 1 << 12
"""Where `model/vnni.py`'s kernel runs, it takes every matrix of this many entries up."""
TINY = 1e-30
"""A row of zeros is divided by this instead of by zero (its product is zero either way)."""


def available() -> bool:
    """Whether this torch build has FBGEMM's int8 kernels (x86 CPU builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def bf16_activations_available() -> bool:
    """Whether the int8-weights, bf16-activations kernel is there and the CPU runs bf16 natively
    (elsewhere torch emulates bf16 and the kernel is slower than fp32)."""
    return hasattr(torch, "_weight_int8pack_mm") and cpu_features.native_bf16()


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """Row blocks from `quantize_rows` as one quantized matrix (the same as quantizing it whole)."""
    if len(parts) == 1:
        return parts[0]
    rows = torch.cat([part.int_repr() for part in parts])
    scales = torch.cat([part.q_per_channel_scales() for part in parts])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch._make_per_channel_quantized_tensor(rows, scales, torch.zeros_like(scales, dtype=torch.long), 0)


def quantize_rows(matrix: torch.Tensor) -> torch.Tensor:
    """`matrix` (rows, columns) in int8 with one symmetric scale per row, as a qint8 tensor."""
    matrix = matrix.detach().float().contiguous()
    scales = (torch.linalg.vector_norm(matrix, ord=float("inf"), dim=1) / 127).clamp(min=TINY).double()
    zeros = torch.zeros(matrix.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # torch 2.13 deprecates qint8 tensors; FBGEMM's packing still takes one
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.quantize_per_channel(matrix, scales, zeros, 0, torch.qint8)


Kernel = Literal["fbgemm", "bf16-activations", "vnni"]


class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W in int8 (per output channel); inference only.

    `quantized` is W (out, in) from `quantize_rows`. `transposed` says whether the float layer it
    replaced was a GPT-2 `Conv1D` (weight stored (in, out)) or an `nn.Linear` (out, in), so
    `float_weight` gives back the same layout. `kernel`: FBGEMM with x quantized per row, or
    `torch._weight_int8pack_mm` with x in bf16 (the module docstring says which pays where).
    """

    def __init__(
        self, quantized: torch.Tensor, bias: torch.Tensor | None, *, transposed: bool, kernel: Kernel = "fbgemm"
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = quantized.shape
        self.transposed = transposed
        self.kernel = kernel
        bias = None if bias is None else bias.detach().float().clone()
        if kernel == "vnni":  # a plain tensor for `vnni.Product`
            self.register_buffer("bias", bias, persistent=False)
        else:
            self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        if kernel == "bf16-activations":
            self.register_buffer("rows", quantized.int_repr().contiguous(), persistent=False)
            self.register_buffer("scales", quantized.q_per_channel_scales().to(torch.bfloat16), persistent=False)
            return
        if kernel == "vnni":
            packed, sums = vnni.pack(quantized)
            scales = torch.zeros(packed.shape[0] * vnni.BLOCK)
            scales[: self.out_features] = quantized.q_per_channel_scales().float()
            self.register_buffer("packed", packed, persistent=False)
            self.register_buffer("scales", scales, persistent=False)
            self.register_buffer("sums", sums, persistent=False)
            self._bind_product()
            return
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        guard = torch.zeros(1, self.in_features)
        guard[0, 0], guard[0, 1] = 1.0, -1.0
        self.register_buffer("guard", guard, persistent=False)

    @classmethod
    def from_float(
        cls, weight: torch.Tensor, bias: torch.Tensor | None, *, transposed: bool, kernel: Kernel = "fbgemm"
    ) -> Int8Linear:
        return cls(quantize_rows(weight.t() if transposed else weight), bias, transposed=transposed, kernel=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("int8 layers are for inference; take gradients through `float_copy(model)`")
        if self.kernel == "bf16-activations":
            product = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).bfloat16(), self.rows, self.scales)
            out = product.float() if self.bias is None else torch.add(self.bias, product)  # fp32 out
            return out.view(*x.shape[:-1], self.out_features).to(x.dtype)
        if self.kernel == "vnni":
            out = self.product(x.reshape(-1, self.in_features)).view(*x.shape[:-1], self.out_features)
            return out if x.dtype == torch.float32 else out.to(x.dtype)
        rows = x.reshape(-1, self.in_features).float()
        peak = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True).clamp_(min=TINY)
        product = torch.ops.quantized.linear_dynamic(torch.cat([rows / peak, self.guard]), self.packed, True)
        product = product[:-1]
        out = product.mul_(peak) if self.bias is None else torch.addcmul(self.bias, product, peak)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        """`to`, `float` and the like replace the buffers: the VNNI product is bound to the new ones."""
        result = super()._apply(fn, recurse)
        if self.kernel == "vnni":
            self._bind_product()
        return result

    def _bind_product(self) -> None:
        self.product = vnni.Product(self.packed, self.scales, self.sums, self.bias, self.out_features)

    def float_weight(self) -> torch.Tensor:
        """The dequantized weight, in the layout of the layer it replaced."""
        if self.kernel == "bf16-activations":
            matrix = self.rows.float() * self.scales.float()[:, None]
        elif self.kernel == "vnni":
            rows = vnni.unpack(self.packed, self.out_features, self.in_features)
            matrix = rows.float() * self.scales[: self.out_features, None]
        else:
            weight, _ = torch.ops.quantized.linear_unpack(self.packed)
            matrix = weight.dequantize()
        return matrix.t().contiguous() if self.transposed else matrix

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel, {self.kernel}"


class Int8Embedding(nn.Module):
    """Token embeddings in int8, one scale per token: the same int8 rows as a tied LM head's, so an
    int8 model keeps its vocabulary matrix once in int8 rather than once more in fp32 (GPT-2 small:
    39 MB instead of 154). A lookup reads each row and multiplies it by its scale. Tied to a VNNI
    head (`sharing`), it reads the head's packed rows, so the matrix is kept only once even then."""

    def __init__(self, quantized: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", quantized.int_repr(), persistent=False)
        self.register_buffer("scales", quantized.q_per_channel_scales().float()[:, None], persistent=False)
        self.num_embeddings, self.embedding_dim = quantized.shape
        self.packed: torch.Tensor | None = None

    @classmethod
    def sharing(cls, head: Int8Linear) -> Int8Embedding:
        """Embeddings that look their rows up in a VNNI head's packed matrix."""
        embedding = cls.__new__(cls)
        nn.Module.__init__(embedding)
        embedding.register_buffer("packed", head.packed, persistent=False)
        embedding.register_buffer("scales", head.scales[: head.out_features, None], persistent=False)
        embedding.num_embeddings, embedding.embedding_dim = head.out_features, head.in_features
        return embedding

    def float_weight(self) -> torch.Tensor:
        """The dequantized matrix (a whole fp32 copy: for `float_copy`, never per step)."""
        if self.packed is not None:
            return vnni.unpack(self.packed, self.num_embeddings, self.embedding_dim).float() * self.scales
        return self.rows.float() * self.scales

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return vnni.packed_rows(self.packed, ids, self.embedding_dim).float() * F.embedding(ids, self.scales)
        return F.embedding(ids, self.rows).float() * F.embedding(ids, self.scales)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row"


WeightReader = Callable[[str, slice | None], torch.Tensor | None]
"""A layer's weight (or a slice of its rows) read afresh by its module name (None: not found), see
`safetensors_reader`."""
CHUNK_ROWS = 4096
"""The vocabulary matrix is quantized this many rows at a time (GPT-2 small: 12 MB instead of 154)."""


def kernels_signature() -> str:
    """Which int8 kernels this machine runs: Taleweaver's own (named by its source's hash) or torch's."""
    return build.library_path().stem if vnni.available() else "torch"


def kernel_for(entries: int, min_weight: int | None = None) -> Kernel | None:
    """The kernel for a matrix of this many entries: Taleweaver's VNNI kernel from `MIN_WEIGHT_VNNI`
    up where it runs; else FBGEMM from `min_weight` (default `MIN_WEIGHT`) up, bf16 activations
    below it where they are native; else None (fp32 stays)."""
    if entries >= MIN_WEIGHT_VNNI and vnni.available():
        return "vnni"
    if entries >= (MIN_WEIGHT if min_weight is None else min_weight):
        return "fbgemm"
    if entries >= MIN_WEIGHT_BF16_ACTIVATIONS and bf16_activations_available():
        return "bf16-activations"
    return None


def quantize_linears(model: PreTrainedModel, min_weight: int | None = None, read: WeightReader | None = None) -> int:
    """Swap the model's GPT-2 `Conv1D` layers and its LM head for `Int8Linear`, each with the
    kernel `kernel_for` gives its size (those it gives none stay fp32); returns how many.

    A head tied to the token embeddings takes them along: both become the same int8 rows
    (`Int8Embedding`). With `read`, an untied weight is read through it rather than through the
    loaded model, whose weights `from_pretrained` maps from the file and pages in only when touched:
    quantizing them in place would page in every fp32 matrix at once (GPT-2 small: 0.5 GB more
    peak memory).
    """
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    names = {module: name for name, module in model.named_modules()}

    def weight_of(module: nn.Module) -> torch.Tensor:
        fresh = None if read is None else read(names[module], None)
        return module.weight if fresh is None else fresh

    def vocabulary_rows(module: nn.Module) -> torch.Tensor:
        """The vocabulary matrix quantized chunk by chunk, each read afresh (or from the module)."""
        count, parts = module.weight.shape[0], []
        for start in range(0, count, CHUNK_ROWS):
            rows = slice(start, min(start + CHUNK_ROWS, count))
            fresh = None if read is None else read(names[module], rows)
            parts.append(quantize_rows(module.weight[rows] if fresh is None else fresh))
        return _joined(parts)

    swapped = 0
    kernel = kernel_for(head.weight.numel(), min_weight) if isinstance(head, nn.Linear) else None
    if kernel:  # first, while memory is emptiest
        if head.weight is embeddings.weight:
            quantized = vocabulary_rows(embeddings)
            int8_head = Int8Linear(quantized, head.bias, transposed=False, kernel=kernel)
            shared = Int8Embedding.sharing(int8_head) if kernel == "vnni" else Int8Embedding(quantized)
            model.set_input_embeddings(shared)
            model.set_output_embeddings(int8_head)
        else:
            model.set_output_embeddings(Int8Linear(vocabulary_rows(head), head.bias, transposed=False, kernel=kernel))
        swapped += 1
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            kernel = kernel_for(child.weight.numel(), min_weight) if isinstance(child, Conv1D) else None
            if kernel:
                setattr(
                    parent, name, Int8Linear.from_float(weight_of(child), child.bias, transposed=True, kernel=kernel)
                )
                _trim_heap()
                swapped += 1
    return swapped


def release_replaced_weights() -> None:
    """Give back the memory of the fp32 layers just replaced: Hugging Face's modules hold each
    other in reference cycles, so they go only at a garbage collection; and glibc keeps freed heap
    memory (the transient fp32 copies quantizing made) until asked to return it. GPT-2 small in
    int8 held 976 MiB after loading without these, 590 MiB with them."""
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """glibc's `malloc_trim`: freed heap pages back to the system (quantizing frees a layer's
    transient fp32 copies at a time; without it the heap grew by 5 MB a layer on GPT-2 small)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator keeps what it keeps
        pass


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, Int8Linear) for module in model.modules())


def safetensors_reader(model_dir: str | Path, prefix: str) -> WeightReader | None:
    """Reads `<module>.weight` from the model directory's safetensors files, one mapping of the file
    per weight (closed again at once, so its pages leave memory); None without such files. A
    checkpoint whose keys lack the base model's `prefix` (the hub's original GPT-2) is read too."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    where = {}
    for path in files:
        with safe_open(path, framework="pt") as handle:
            where.update(dict.fromkeys(handle.keys(), path))

    def read(module: str, rows: slice | None) -> torch.Tensor | None:
        for key in (f"{module}.weight", f"{module}.weight".removeprefix(f"{prefix}.")):
            if key in where:
                with safe_open(where[key], framework="pt") as handle:
                    return handle.get_tensor(key).clone() if rows is None else handle.get_slice(key)[rows].clone()
        return None

    return read


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
        elif isinstance(module, Int8Embedding):
            state[f"{name}.weight"] = module.float_weight()
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
