"""The matrix products a decoding step is made of, kernel by kernel, one thread.

Why int8 and bf16 pay where they do (`model/int8.py`, `model/prepacked.py`), and why GPT-2 small
stays behind CTranslate2 int8 (`bench/peers.py`): each kernel multiplies one row and eight rows by
GPT-2 small's 768 × 2304 matrix and by the shipped model's 256 × 1024 one, and the time per
product is given twice:

- cold: a different copy of the matrix each time, 256 MB of copies in turn, so the weights come
  from memory as they do in a GPT-2-small step (its 124M weights do not fit in any cache);
- hot: the same matrix again, from cache, as a small model's step mostly reads them.

The weight bytes read per second (cold) against what one core reads from memory at all (the sum
of a 128 MB fp32 tensor) say how far each kernel is from the memory's own limit.

    python -m bench.kernels [--quick]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.common import fmt, machine_info, print_table, set_threads, write_json
from model import decode_attention, int8, vnni
from model.cpu_features import NATIVE_BF16, cpu_flags
from model.native import library

SHAPES = {"GPT-2 small 768 × 2304": (2304, 768), "shipped 256 × 1024": (1024, 256)}
ROWS = (1, 8)
COLD_BYTES = 256 << 20


def read_bandwidth(repeats: int) -> float:
    """GB/s of one core summing a 128 MB fp32 tensor (the memory's limit for a step)."""
    data = torch.ones(32 << 20)
    data.sum()
    started = time.perf_counter()
    for _ in range(repeats):
        data.sum()
    return repeats * data.numel() * 4 / (time.perf_counter() - started) / 1e9


def kernels() -> dict[str, tuple[Callable, int]]:
    """Name → (a function from (weight copy, rows) to the product, bytes of one weight copy)."""
    made: dict[str, tuple[Callable, int]] = {
        "fp32, MKL (F.linear)": (lambda w: lambda x: F.linear(x, w), 4),
        "fp32, oneDNN packed": (
            lambda w: (
                lambda x, p=torch.ops.mkldnn._reorder_linear_weight(w, 8): torch.ops.mkldnn._linear_pointwise(
                    x, p, None, "none", [], ""
                )
            ),
            4,
        ),
        "bf16, oneDNN packed": (
            lambda w: (
                lambda x, p=torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), 8): (
                    torch.ops.mkldnn._linear_pointwise(x.bfloat16(), p, None, "none", [], "")
                )
            ),
            2,
        ),
    }
    if int8.available():
        made["int8, FBGEMM, rows scaled (Taleweaver's big matrices)"] = (
            lambda w: int8.Int8Linear.from_float(w, None, transposed=False, kernel="fbgemm"),
            1,
        )
    if hasattr(torch, "_weight_int8pack_mm"):
        made["int8 weights, bf16 rows (Taleweaver's small matrices)"] = (
            lambda w: int8.Int8Linear.from_float(w, None, transposed=False, kernel="bf16-activations"),
            1,
        )
    if vnni.available():
        made["int8, Taleweaver's own kernel (VNNI; AMX for several rows where lent)"] = (
            lambda w: int8.Int8Linear.from_float(w, None, transposed=False, kernel="vnni"),
            1,
        )
        made["int8, Taleweaver's own kernel, AMX off"] = (
            lambda w: _without_amx(int8.Int8Linear.from_float(w, None, transposed=False, kernel="vnni")),
            1,
        )
    return made


def _without_amx(layer: Callable) -> Callable:
    def call(x: torch.Tensor) -> torch.Tensor:
        library.use_amx(False)
        try:
            return layer(x)
        finally:
            library.use_amx(True)

    return call


HEADS, HEAD_DIM, POSITIONS = 12, 64, 128


def _sdpa_per_row(query: torch.Tensor, cache: torch.Tensor, pads: list[int]) -> None:
    for row, pad in enumerate(pads):
        F.scaled_dot_product_attention(
            query[row].view(1, HEADS, 1, HEAD_DIM), cache[0, row : row + 1, :, pad:], cache[1, row : row + 1, :, pad:]
        )


def _own_attention(query: torch.Tensor, cache: torch.Tensor, pads: list[int]) -> None:
    decode_attention.attend(query, cache[0], cache[1], pads, HEAD_DIM**-0.5)


def attention_times(repeats: int) -> list[dict]:
    """GPT-2 small's attention for one new token per row (12 heads of 64, 128 cached positions,
    rows of different lengths): SDPA once per row, as the lean step called it for rows of
    different lengths, against Taleweaver's kernel, all rows in one call; cache from memory
    (a different layer's cache each time, 256 MB in turn)."""
    kinds = {"SDPA, once per row": _sdpa_per_row}
    if decode_attention.available():
        kinds["Taleweaver's kernel, all rows at once"] = _own_attention
    results = []
    for rows in ROWS:
        layers = max(2, COLD_BYTES // (2 * rows * HEADS * POSITIONS * HEAD_DIM * 4))
        caches = [torch.randn(2, rows, HEADS, POSITIONS, HEAD_DIM) for _ in range(layers)]
        query = torch.randn(rows, HEADS * HEAD_DIM)
        pads = [(17 * row) % (POSITIONS // 2) for row in range(rows)]
        for name, run in kinds.items():
            calls = [functools.partial(_ignore_x, run, query, cache, pads) for cache in caches]
            results.append({"kernel": name, "rows": rows, "cold_ms": time_per_call(calls, query, repeats) * 1e3})
        del caches
    return results


def _ignore_x(run: Callable, query: torch.Tensor, cache: torch.Tensor, pads: list[int], _x: torch.Tensor) -> None:
    run(query, cache, pads)


def time_per_call(calls: list[Callable], x: torch.Tensor, repeats: int) -> float:
    """Seconds per product, cycling through `calls` (one per weight copy)."""
    for call in calls[:2]:
        call(x)
    started = time.perf_counter()
    for _ in range(repeats):
        for call in calls:
            call(x)
    return (time.perf_counter() - started) / (repeats * len(calls))


def measure(quick: bool) -> list[dict]:
    results = []
    generator = torch.Generator().manual_seed(0)
    for shape_name, (out_features, in_features) in SHAPES.items():
        for kernel_name, (make, bytes_per_weight) in kernels().items():
            copies = max(2, COLD_BYTES // (out_features * in_features * bytes_per_weight))
            if quick:
                copies = min(copies, 8)
            weights = [torch.randn(out_features, in_features, generator=generator) * 0.02 for _ in range(copies)]
            calls = [make(w) for w in weights]
            del weights
            for rows in ROWS:
                x = torch.randn(rows, in_features, generator=generator)
                cold = time_per_call(calls, x, 1 if quick else 3)
                hot = time_per_call(calls[:1], x, 20 if quick else 300)
                results.append(
                    {
                        "shape": shape_name,
                        "kernel": kernel_name,
                        "rows": rows,
                        "cold_ms": cold * 1e3,
                        "hot_ms": hot * 1e3,
                        "cold_gb_per_s": out_features * in_features * bytes_per_weight / cold / 1e9,
                    }
                )
            del calls
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few copies and repeats: checks that all runs")
    args = parser.parse_args(argv)
    set_threads(1)
    native = bool(cpu_flags() & NATIVE_BF16)
    print(f"{machine_info()}\nbf16 native on this CPU: {native}")
    with torch.inference_mode():
        bandwidth = read_bandwidth(2 if args.quick else 10)
        results = measure(args.quick)
        attention = attention_times(1 if args.quick else 3)
    print_table(
        f"One product, one thread, ms (cold: weights from memory; hot: from cache); one core reads "
        f"{bandwidth:.1f} GB/s from memory",
        ["matrix", "kernel", "rows", "cold ms", "hot ms", "weight GB/s (cold)"],
        [
            [r["shape"], r["kernel"], r["rows"], fmt(r["cold_ms"], 3), fmt(r["hot_ms"], 3), fmt(r["cold_gb_per_s"])]
            for r in results
        ],
    )
    print_table(
        "Attention for one new token per row, GPT-2 small's 12 heads of 64 over 128 cached positions, cache from "
        "memory, ms a layer",
        ["kernel", "rows", "ms"],
        [[r["kernel"], r["rows"], fmt(r["cold_ms"], 3)] for r in attention],
    )
    write_json(
        "kernels", {"read_gb_per_s": bandwidth, "bf16_native": native, "results": results, "attention": attention}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
