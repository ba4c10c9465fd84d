"""Attention for the lean step's one new token per row in int8, in Taleweaver's own kernel
(`model/native/decode_attention.c`) where it runs; elsewhere, and in fp32, the step keeps SDPA.

The step used to call SDPA once per run of equally padded rows, so that a row's numbers did not
depend on its batch; the kernel attends every row over its own positions in one call, with the
same guarantee (each row and head is summed in a fixed order of its own), and without SDPA's cost
for a one-position query (`bench/kernels.py`). Its numbers are not SDPA's to the last bit (another
summation order, its own exp): a story is the same alone and in any batch of the continuous path,
and within about 1e-6 of Hugging Face's forward pass.
"""

from __future__ import annotations

import torch

from model.native import library


def available() -> bool:
    return library.function("tw_decode_attention") is not None


def supports(head_dim: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernel takes this model's attention (fp32 on the CPU, heads of 16·k ≤ 256 values)."""
    shape_fits = head_dim % 16 == 0 and 0 < head_dim <= 256
    return device.type == "cpu" and dtype == torch.float32 and shape_fits and available()


class StepAttention:
    """One step's attention for every layer: the rows' paddings checked and put in a tensor once
    (the shipped model's step is about a millisecond, and four layers each building them cost a
    tenth of it), then one kernel call per layer."""

    __slots__ = ("_function", "padding", "rows", "scratch", "width")

    def __init__(self, pads: list[int], width: int) -> None:
        function = library.function("tw_decode_attention")
        if function is None:
            raise RuntimeError("the decode attention kernel is not available on this machine")
        if any(not 0 <= pad < width for pad in pads):
            raise ValueError(f"every row needs a position: paddings {pads} of {width} positions")
        self._function = function
        self.padding = torch.tensor(pads, dtype=torch.int64)
        self.scratch = torch.empty(width)
        self.rows, self.width = len(pads), width

    def __call__(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
        """query (rows, heads·dim); keys and values (rows, heads, width, dim) views of the cache whose
        positions are rows of `dim` contiguous floats → (rows, heads·dim)."""
        rows, heads, width, dim = keys.shape
        strides = keys.stride()
        if (
            rows != self.rows
            or width != self.width
            or strides != values.stride()
            or strides[2:] != (dim, 1)
            or query.shape != (rows, heads * dim)
            or query.stride(1) != 1
            or keys.dtype != torch.float32
            or values.dtype != torch.float32
            or query.dtype != torch.float32
        ):
            raise ValueError("attention takes fp32 cache views with contiguous positions, one query per row")
        out = torch.empty(rows, heads * dim)
        status = self._function(
            query.data_ptr(), query.stride(0), keys.data_ptr(), values.data_ptr(), strides[0], strides[1],
            rows, heads, dim, width, self.padding.data_ptr(), scale, out.data_ptr(), self.scratch.data_ptr(),
        )  # fmt: skip
        if status:
            raise ValueError(f"the decode attention kernel refused its arguments ({status})")
        return out


def attend(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pads: list[int], scale: float
) -> torch.Tensor:
    """One layer's attention (`StepAttention` for a single call): row r attends positions pads[r]…"""
    if len(pads) != keys.shape[0]:
        raise ValueError(f"{len(pads)} paddings for {keys.shape[0]} rows")
    return StepAttention(pads, keys.shape[2])(query, keys, values, scale)
