"""Taleweaver's own int8 kernel (model/vnni.py, model/native/int8_gemm.c): its packed layout, its
exact agreement with a plain-torch statement of what it computes, rows that do not depend on their
batch, a tied head and embeddings sharing one packed matrix, and a clean fallback where it cannot
be built."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from model import int8, vnni
from model.native import build, library

needs_vnni = pytest.mark.skipif(not vnni.available(), reason="this CPU has no AVX-512 VNNI (or no C compiler)")
SHAPES = [(96, 64), (100, 30), (2304, 768), (65, 7), (1, 4), (4200, 12)]
"""(outputs, inputs): whole blocks, ragged blocks and inputs not a multiple of four, a big matrix,
more rows than `vnni.PACK_ROWS`."""


def _quantized(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return int8.quantize_rows(torch.randn(out_features, in_features, generator=generator) * 0.1)


@pytest.mark.parametrize("shape", SHAPES)
def test_packing_keeps_every_weight_and_pads_with_zeros(shape) -> None:
    rows = _quantized(*shape).int_repr()
    packed, sums = vnni.pack(rows)
    assert packed.shape == (-(-shape[0] // 64), -(-shape[1] // 4), 64, 4)
    assert packed.data_ptr() % 64 == 0
    assert torch.equal(vnni.unpack(packed, *shape), rows)
    assert torch.equal(sums[: shape[0]], rows.sum(dim=1, dtype=torch.int32))
    assert not sums[shape[0] :].any()
    assert int(packed.abs().sum()) == int(rows.abs().sum())  # padding holds only zeros
    from_quantized = vnni.pack(_quantized(*shape))  # packed chunk by chunk from the qint8 tensor itself
    assert torch.equal(from_quantized[0], packed) and torch.equal(from_quantized[1], sums)
    for ids in ([[0, shape[0] - 1], [shape[0] // 2, 0]], [[shape[0] - 1]], [shape[0] // 3, 0], []):
        ids = torch.tensor(ids, dtype=torch.long)
        assert torch.equal(vnni.packed_rows(packed, ids, shape[1]), rows[ids])


@needs_vnni
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_the_kernel_computes_exactly_what_its_reference_says(shape, with_bias) -> None:
    quantized = _quantized(*shape)
    rows, scales = quantized.int_repr(), quantized.q_per_channel_scales().float()
    packed, sums = vnni.pack(rows)
    padded_scales = torch.zeros(packed.shape[0] * 64)
    padded_scales[: shape[0]] = scales
    generator = torch.Generator().manual_seed(1)
    bias = torch.randn(shape[0], generator=generator) if with_bias else None
    x = torch.randn(13, shape[1], generator=generator) * torch.logspace(-3, 2, 13)[:, None]
    x[3] = 0.0  # a row of zeros
    x[5] = x[5].abs()  # a row with nothing below zero
    got = vnni.gemm(x, packed, padded_scales, sums, bias, shape[0])
    assert torch.equal(got, vnni.reference(x, rows, scales, bias))
    assert torch.equal(got[3], torch.zeros(shape[0]) if bias is None else bias)


@needs_vnni
@pytest.mark.skipif(not library.AMX_FLAGS <= library.cpu_features.cpu_flags(), reason="this CPU has no AMX")
@pytest.mark.parametrize("shape", [(2304, 768), (100, 64), (65, 128), (96, 60)])
def test_amx_and_the_vnni_tiles_give_the_same_exact_sums(shape) -> None:
    """Several rows go through AMX where Linux lends it (K a multiple of 64), else the VNNI tiles."""
    quantized = _quantized(*shape)
    rows, scales = quantized.int_repr(), quantized.q_per_channel_scales().float()
    layer = int8.Int8Linear(quantized, torch.randn(shape[0]), transposed=False, kernel="vnni")
    x = torch.randn(20, shape[1], generator=torch.Generator().manual_seed(2))
    try:
        assert library.use_amx(True)
        through_amx = [layer(x[:m]) for m in (2, 8, 17, 20)]
        assert not library.use_amx(False)
        through_vnni = [layer(x[:m]) for m in (2, 8, 17, 20)]
    finally:
        library.use_amx(True)
    expected = vnni.reference(x, rows, scales, layer.bias)
    assert all(torch.equal(a, b) and torch.equal(a, expected[: len(a)]) for a, b in zip(through_amx, through_vnni))


@needs_vnni
def test_a_vnni_layer_gives_each_row_what_it_gives_it_alone_and_stays_close_to_fp32() -> None:
    generator = torch.Generator().manual_seed(0)
    for out_features, in_features in [(96, 64), (768, 256), (256, 1024)]:
        weight = torch.randn(in_features, out_features, generator=generator) * 0.1  # a Conv1D's (in, out)
        bias = torch.randn(out_features, generator=generator)
        layer = int8.Int8Linear.from_float(weight, bias, transposed=True, kernel="vnni")
        x = torch.randn(11, in_features, generator=generator) * torch.logspace(-3, 2, 11)[:, None]
        together = layer(x)
        assert all(
            torch.equal(layer(x[i : i + n]), together[i : i + n]) for n in (1, 2, 3, 7, 8) for i in range(11 - n)
        )
        exact = x @ weight + bias
        assert ((together - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.02  # 8-bit weights and rows
        assert layer.float_weight().shape == weight.shape
        assert ((layer.float_weight() - weight).abs() <= weight.abs().amax(dim=0) / 254 + 1e-7).all()
        assert layer(x[:2].view(1, 2, -1)).shape == (1, 2, out_features)


@needs_vnni
def test_a_tied_vnni_head_and_its_embeddings_share_one_packed_matrix(tiny_model_dir, monkeypatch) -> None:
    from model.loading import load_model

    monkeypatch.setattr(int8, "MIN_WEIGHT_VNNI", 0)
    model = load_model(tiny_model_dir, device="cpu", precision="int8").model
    head, embeddings = model.lm_head, model.transformer.wte
    assert head.kernel == "vnni" and embeddings.packed.data_ptr() == head.packed.data_ptr()
    bound = [t for m in layers_of(model) for t in m.product._tensors if t is not None]
    buffers = {t.data_ptr() for m in layers_of(model) for t in m.buffers()}
    assert {t.data_ptr() for t in bound} == buffers  # loading's later steps kept the tensors the kernel reads
    int8_storages = {b.data_ptr() for _, b in model.named_buffers(remove_duplicate=False) if b.dtype == torch.int8}
    assert int8_storages == {m.packed.data_ptr() for m in layers_of(model)}  # the vocabulary matrix once, not twice
    ids = torch.tensor([[3, 0, model.config.vocab_size - 1]])
    assert torch.equal(embeddings(ids), embeddings.float_weight()[ids])
    assert torch.equal(embeddings.float_weight(), head.float_weight())


@needs_vnni
def test_a_copied_vnni_layer_reads_its_own_weights() -> None:
    generator = torch.Generator().manual_seed(0)
    layer = int8.Int8Linear.from_float(torch.randn(96, 64, generator=generator), None, transposed=False, kernel="vnni")
    x = torch.randn(3, 64, generator=generator)
    twin = copy.deepcopy(layer)
    assert twin.product._tensors[0] is twin.packed and twin.packed.data_ptr() != layer.packed.data_ptr()
    expected = layer(x)
    layer.packed.zero_()
    assert torch.equal(twin(x), expected) and not torch.equal(layer(x), expected)


def test_without_a_compiler_int8_keeps_torchs_kernels(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("TALEWEAVER_NATIVE_DIR", str(tmp_path / "native"))
    monkeypatch.setattr(library.cpu_features, "cpu_flags", lambda: library.NEEDED_FLAGS)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    _clear_caches()
    try:
        with caplog.at_level(logging.WARNING, logger="model.native.library"):
            assert not vnni.available()
        assert "kernels unavailable" in caplog.text and "no-such-compiler" in caplog.text
        assert int8.kernel_for(int8.MIN_WEIGHT) == "fbgemm"
        packed, sums = vnni.pack(torch.ones(4, 4, dtype=torch.int8))
        with pytest.raises(RuntimeError, match="not available"):
            vnni.gemm(torch.ones(1, 4), packed, torch.ones(64), sums, None, 4)
    finally:
        _clear_caches()


def test_a_cpu_without_vnni_never_builds_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TALEWEAVER_NATIVE_DIR", str(tmp_path / "native"))
    monkeypatch.setattr(library.cpu_features, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    _clear_caches()
    try:
        assert not vnni.available()
        assert not (tmp_path / "native").exists()
    finally:
        _clear_caches()


@needs_vnni
def test_the_library_is_built_once_per_source_version(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TALEWEAVER_NATIVE_DIR", str(tmp_path / "native"))
    _clear_caches()
    try:
        assert vnni.available()
        built = list((tmp_path / "native").iterdir())
        assert [p.name for p in built] == [build.library_path().name]
        stamp = built[0].stat().st_mtime_ns
        _clear_caches()
        assert vnni.available() and built[0].stat().st_mtime_ns == stamp  # loaded, not compiled again
    finally:
        _clear_caches()


def _clear_caches() -> None:
    library.load.cache_clear()


def layers_of(model: torch.nn.Module) -> list[int8.Int8Linear]:
    return [m for m in model.modules() if isinstance(m, int8.Int8Linear)]
