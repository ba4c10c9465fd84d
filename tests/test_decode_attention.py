"""Taleweaver's attention kernel for the lean step (model/decode_attention.py): SDPA's result within
float rounding, each row over its own positions only, the same alone and in any batch, and bad
arguments refused before any C code reads them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import decode_attention

needs_kernel = pytest.mark.skipif(not decode_attention.available(), reason="no AVX-512 VNNI CPU or no C compiler")
SHAPES = [(1, 60, 12, 64), (3, 37, 4, 64), (8, 130, 12, 64), (2, 17, 8, 32), (2, 5, 2, 48), (4, 40, 2, 256)]
"""(rows, positions, heads, head size)."""


def _cache(rows: int, width: int, heads: int, dim: int, seed: int = 0):
    """Keys and values as views into bigger buffers, as the growing cache keeps them."""
    generator = torch.Generator().manual_seed(seed)
    buffers = torch.randn(2, rows + 2, heads, width + 24, dim, generator=generator)
    keys, values = buffers[0, :rows, :, 8 : 8 + width], buffers[1, :rows, :, 8 : 8 + width]
    query = torch.randn(rows, heads * dim, generator=generator)
    pads = [(3 * row) % width for row in range(rows)]
    return query, keys, values, pads


def _sdpa(query, keys, values, pads, scale):
    rows, heads, _, dim = keys.shape
    return torch.cat(
        [
            F.scaled_dot_product_attention(
                query[row].view(1, heads, 1, dim),
                keys[row : row + 1, :, pad:],
                values[row : row + 1, :, pad:],
                scale=scale,
            ).reshape(1, -1)
            for row, pad in enumerate(pads)
        ]
    )


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
def test_the_kernel_gives_sdpas_attention_and_each_row_what_it_gets_alone(shape) -> None:
    query, keys, values, pads = _cache(*shape)
    scale = shape[3] ** -0.5
    together = decode_attention.attend(query, keys, values, pads, scale)
    assert torch.allclose(together, _sdpa(query, keys, values, pads, scale), rtol=0, atol=2e-6)
    alone = [
        decode_attention.attend(query[r : r + 1], keys[r : r + 1], values[r : r + 1], [pads[r]], scale)
        for r in range(shape[0])
    ]
    assert torch.equal(together, torch.cat(alone))


@needs_kernel
def test_a_row_never_reads_its_padding() -> None:
    query, keys, values, pads = _cache(3, 20, 4, 64)
    before = decode_attention.attend(query, keys, values, pads, 0.125)
    for row, pad in enumerate(pads):
        keys[row, :, :pad] = 1e6
        values[row, :, :pad] = float("nan")
    assert torch.equal(decode_attention.attend(query, keys, values, pads, 0.125), before)


@needs_kernel
def test_bad_arguments_are_refused_before_the_kernel_reads_them() -> None:
    query, keys, values, pads = _cache(2, 10, 4, 64)
    with pytest.raises(ValueError):
        decode_attention.attend(query, keys, values, [0, 10], 0.125)  # no position left for row 2
    with pytest.raises(ValueError):
        decode_attention.attend(query, keys, values, [0], 0.125)  # a pad for each row
    with pytest.raises(ValueError):
        decode_attention.attend(query, keys.transpose(2, 3), values.transpose(2, 3), pads, 0.125)
    with pytest.raises(ValueError):
        decode_attention.attend(query[:, :128], keys, values, pads, 0.125)


def test_the_kernel_is_for_fp32_heads_of_sixteen_values_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert not decode_attention.supports(64, torch.bfloat16, cpu)
    assert not decode_attention.supports(24, torch.float32, cpu)
    assert not decode_attention.supports(512, torch.float32, cpu)
    assert not decode_attention.supports(64, torch.float32, torch.device("meta"))
    assert decode_attention.supports(64, torch.float32, cpu) == decode_attention.available()
