"""Taleweaver's own int8 matrix product for CPUs with AVX-512 VNNI (`model/native/int8_gemm.c`).

torch's int8 kernels read GPT-2 small's weights at 3.0–3.6 GB/s on one Sapphire Rapids core,
where its fp32 product reads 6.7 and CTranslate2's int8 at least 7.6 (`bench/kernels.py`); a
decoding step is bound by those reads, so CTranslate2 int8 wrote 2× Taleweaver's tokens a second.
This kernel streams the weights in the order it multiplies them (`pack`) and keeps the products in
integers: each row of x quantized on its own to uint8, the sums exact in int32, one float
epilogue per output. A row's result is the same alone and in any batch.

The C source is compiled on first use with the system's C compiler (`model/native/build.py`);
where there is no compiler or no VNNI, `available()` is False and int8 keeps torch's kernels.
"""

from __future__ import annotations

import copy
import mmap

import torch

from model.native import library

BLOCK = 64
"""Outputs per block of the packed layout (four AVX-512 vectors of 16)."""
HUGE_PAGE = 2 << 20
"""Packed matrices this big or bigger get their own mapping, advised to use transparent huge pages."""


def available() -> bool:
    """Whether the kernel runs on this machine (VNNI present, compiled and loaded)."""
    return library.load() is not None


PACK_ROWS = 64 * BLOCK
"""Rows packed at a time (`pack`): the vocabulary matrix is never copied whole on its way in."""


def pack(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weights (out, in), plain or a per-row qint8 tensor → (packed (blocks, in/4, 64, 4) int8,
    per-output sums int32 (blocks·64)).

    Outputs are padded to a multiple of 64 and inputs to a multiple of 4 with zeros; the packed
    tensor's storage is 64-byte aligned (aligned vector loads). Packed `PACK_ROWS` rows at a time,
    so loading GPT-2 small's head costs its packed copy and a few MB, not three more copies of it
    (peak memory while loading GPT-2 small in int8: 804 MiB with whole-matrix copies)."""
    out_features, in_features = rows.shape
    blocks, groups = -(-out_features // BLOCK), -(-in_features // 4)
    packed = _aligned_empty((blocks, groups, BLOCK, 4))
    sums = torch.zeros(blocks * BLOCK, dtype=torch.int32)
    for start in range(0, blocks * BLOCK, PACK_ROWS):
        stop = min(start + PACK_ROWS, blocks * BLOCK)
        chunk = torch.zeros(stop - start, groups * 4, dtype=torch.int8)
        real = rows[start : min(stop, out_features)]
        chunk[: real.shape[0], :in_features] = real.int_repr() if real.is_quantized else real
        packed[start // BLOCK : stop // BLOCK] = chunk.view(-1, BLOCK, groups, 4).permute(0, 2, 1, 3)
        sums[start:stop] = chunk.sum(dim=1, dtype=torch.int32)
    return packed, sums


def unpack(packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The (out, in) int8 rows back from `pack`'s layout."""
    blocks, groups = packed.shape[:2]
    rows = packed.permute(0, 2, 1, 3).reshape(blocks * BLOCK, groups * 4)
    return rows[:out_features, :in_features].contiguous()


def packed_rows(packed: torch.Tensor, ids: torch.Tensor, in_features: int) -> torch.Tensor:
    """Rows `ids` of the packed matrix as (…, in) int8: an embedding lookup that shares the tied
    LM head's packed copy instead of keeping the vocabulary matrix twice."""
    flat = ids.reshape(-1)
    if 0 < len(flat) <= 2:  # a step's usual one or two ids: plain slices (10 µs against 20 for one id)
        picked = torch.stack([packed[token // BLOCK, :, token % BLOCK] for token in flat.tolist()])
    else:
        picked = packed[flat // BLOCK, :, flat % BLOCK, :]  # (len, groups, 4)
    return picked.reshape(*ids.shape, packed.shape[1] * 4)[..., :in_features]


def _aligned_empty(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    count = 1
    for size in shape:
        count *= size
    if count >= HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        region = mmap.mmap(-1, count + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        region.madvise(mmap.MADV_HUGEPAGE)
        start = torch.frombuffer(region, dtype=torch.int8, count=1).data_ptr()
        offset = (-start) % HUGE_PAGE
        return torch.frombuffer(region, dtype=torch.int8, count=count, offset=offset).view(shape)
    raw = torch.empty(count + 64, dtype=torch.int8)
    offset = (-raw.data_ptr()) % 64
    return raw[offset : offset + count].view(shape)


class Product:
    """x (m, in) fp32 → x Wᵀ + b (m, out) fp32 for one packed int8 matrix, its pointers bound once.

    GPT-2 small makes 49 of these a step and the shipped model 17, whose whole step is about a
    millisecond: a `gemm`-style call that looked up four tensors and their pointers took 7 µs of
    Python, this one 3 (a `Parameter`'s `data_ptr` alone took 0.6 µs, through
    `__torch_function__`). The tensors are held here, so the pointers stay valid; whoever replaces
    them (`Int8Linear._apply`) binds a new `Product`."""

    __slots__ = ("_function", "_groups", "_matrix", "_tensors", "out_features")

    def __init__(
        self,
        packed: torch.Tensor,
        scales: torch.Tensor,
        sums: torch.Tensor,
        bias: torch.Tensor | None,
        out_features: int,
    ) -> None:
        function = library.function("tw_int8_gemm")
        if function is None:
            raise RuntimeError("the int8 VNNI kernel is not available on this machine")
        for tensor in (packed, scales, sums, bias):
            if tensor is not None and (tensor.device.type != "cpu" or not tensor.is_contiguous()):
                raise ValueError("the VNNI kernel takes contiguous CPU tensors")
        self._function = function
        self._tensors = (packed, scales, sums, bias)
        self._groups, self.out_features = packed.shape[1], out_features
        self._matrix = (
            packed.data_ptr(), packed.shape[0], scales.data_ptr(), sums.data_ptr(),
            0 if bias is None else bias.data_ptr(),
        )  # fmt: skip

    def __deepcopy__(self, memo: dict) -> Product:
        """A copy bound to the copies of its tensors (the copied module's own buffers, through `memo`)."""
        packed, scales, sums, bias = (copy.deepcopy(t, memo) for t in self._tensors)
        return Product(packed, scales, sums, bias, self.out_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            x = x.float()
        x = x.contiguous()
        rows, columns = x.shape
        if (columns + 3) // 4 != self._groups:
            raise ValueError(f"rows of {columns} values for a matrix of {self._groups * 4} (padded) inputs")
        packed, blocks, scales, sums, bias = self._matrix
        y = torch.empty(rows, self.out_features)
        if rows and self._function(
            x.data_ptr(), rows, columns, packed, blocks, scales, sums, bias, y.data_ptr(), self.out_features
        ):
            raise MemoryError("the int8 VNNI kernel could not allocate its activation buffer")
        return y


def gemm(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    sums: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
) -> torch.Tensor:
    """x (m, in) fp32 times the packed int8 matrix (scaled per output, plus bias) → (m, out) fp32."""
    return Product(packed, scales, sums, bias, out_features)(x)


def reference(x: torch.Tensor, rows: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What `gemm` computes, in plain torch (for tests): each row of x quantized as the kernel does,
    the integer product exact, then the same float operations in the same order."""
    x = x.float()
    low = x.amin(dim=1, keepdim=True).clamp(max=0)
    high = x.amax(dim=1, keepdim=True).clamp(min=0)
    step = (high - low) / 255.0
    step = torch.where(step > 0, step, torch.ones_like(step))
    inverse = 1.0 / step
    zero = torch.round(-low * inverse).clamp(0, 255)
    q = (torch.round(x * inverse) + zero).clamp(0, 255)
    exact = q.double() @ rows.double().t() - zero.double() * rows.double().sum(dim=1)
    out = exact.float() * (step * scales.float()[None, :])
    return out if bias is None else out + bias
