"""Benchmark 5: the physical floor on this machine, and how far the measured times are above it.

One decoding step must read every weight once (memory-bound at small batches) and do about
2·parameters floating-point operations per row (compute-bound at large ones), so the least time
of a step that advances `batch` rows is max(weight bytes / bandwidth, 2·params·batch / matmul rate).
Both rates are measured here, at 1 and 2 threads, best of several tries, and the better thread count
is the floor (the machine's, not the service's setting). KV-cache reads and attention are left out:
at these lengths they are a few percent of the weights.

The measured times come from benchmarks 1 and 2 (`bench/results/latency.json` and
`concurrency.json`), so run those first; `python -m bench` runs them in order.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch

from bench.common import (
    NOISE_NOTE,
    bench_models,
    fmt,
    param_count,
    percentile,
    print_table,
    read_json,
    scale,
    service_config,
    set_threads,
    weight_bytes,
    write_json,
)
from model.loading import load_model

BATCHES = (1, 8, 32)
THREADS = (1, 2)
BANDWIDTH_BYTES = 1 << 30
"""Big enough to leave every cache behind: what streaming a model's weights from DRAM costs."""


def best_seconds(work, tries: int) -> float:
    work()
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def bandwidth(nbytes: int, threads: int, tries: int) -> dict[str, float]:
    """GB/s reading (a sum: what streaming weights does) and copying (read + write counted)."""
    set_threads(threads)
    source = torch.ones(nbytes // 4)
    target = torch.empty_like(source)
    read = nbytes / best_seconds(source.sum, tries) / 1e9
    copy = 2 * nbytes / best_seconds(lambda: target.copy_(source), tries) / 1e9
    return {"read_gb_s": read, "copy_gb_s": copy}


def matmul_rates(width: int, vocab: int, threads: int, tries: int, rows: int = 256) -> dict[str, float]:
    """fp32 GFLOP/s of a transformer block's and the LM head's matrix shapes, `rows` tokens at once."""
    set_threads(threads)
    rates = {}
    for inner, outer in ((width, 4 * width), (4 * width, width), (width, vocab)):
        left, right = torch.randn(rows, inner), torch.randn(inner, outer)
        seconds = best_seconds(lambda a=left, b=right: a @ b, tries)
        rates[f"{rows}x{inner}x{outer}"] = 2 * rows * inner * outer / seconds / 1e9
    return rates


def floor_ms(weights: int, params: int, batch: int, read_gb_s: float, gflop_s: float) -> tuple[float, str]:
    """Least time of one decoding step of `batch` rows, and which limit binds."""
    memory = weights / (read_gb_s * 1e9)
    compute = 2 * params * batch / (gflop_s * 1e9)
    return (max(memory, compute) * 1000, "memory" if memory >= compute else "compute")


def measured_ms(model: str) -> dict[int, dict[str, float | None]]:
    """Per batch size, the greedy step times benchmarks 1 and 2 wrote (None when not run)."""
    found: dict[int, dict[str, float | None]] = {batch: {} for batch in BATCHES}
    latency = read_json("latency") or {"summary": []}
    for row in latency["summary"]:
        if row["model"] == model and row["strategy"] == "greedy":
            found[1] = {f"{variant} (bench 1)": v["per_token_ms"] for variant, v in row["variants"].items()}
    concurrency = read_json("concurrency") or {"summary": []}
    for row in concurrency["summary"]:
        batched = row["max_batch_size"] == row["users"] > 1 or row["users"] == 1 < row["max_batch_size"]
        if row["model"] == model and row["workload"] == "greedy" and batched:
            found[row["users"]][f"service, {row['users']} user(s) at once (bench 2)"] = row["ms_per_token_after_first"]
    return found


def run(quick: bool) -> dict:
    tries = 2 if quick else 5
    machine = {"threads": {}}
    for threads in THREADS:
        machine["threads"][threads] = bandwidth(BANDWIDTH_BYTES, threads, tries)
    read = max(t["read_gb_s"] for t in machine["threads"].values())
    models = []
    for bench_model in bench_models():
        loaded = load_model(bench_model.path, "cpu", service_config().model.dtype)
        config = loaded.model.config
        weights, params = weight_bytes(loaded.model), param_count(loaded.model)
        rates = {threads: matmul_rates(config.n_embd, config.vocab_size, threads, tries) for threads in THREADS}
        best_rate = max(max(r.values()) for r in rates.values())
        floors = {batch: floor_ms(weights, params, batch, read, best_rate) for batch in BATCHES}
        models.append(
            {
                "model": bench_model.name,
                "params": params,
                "weight_bytes": weights,
                "matmul_gflop_s": rates,
                "best_gflop_s": best_rate,
                "read_gb_s": read,
                "floor_ms": {b: f[0] for b, f in floors.items()},
                "floor_bound": {b: f[1] for b, f in floors.items()},
                "measured_ms": measured_ms(bench_model.name),
            }
        )
    print_machine(machine, models)
    print_floors(models)
    goals = goal_rows(models)
    print_table(
        "Goals of the issue (one run; floor = the best this machine allows)",
        ["model", "goal", "measured", "met", "floor"],
        goals,
    )
    payload = {
        "scale": asdict(scale(quick)),
        "bandwidth_bytes": BANDWIDTH_BYTES,
        "machine_rates": machine,
        "models": models,
        "goals": goals,
    }
    write_json("floor", payload)
    return payload


def print_machine(machine: dict, models: list[dict]) -> None:
    rows = []
    for threads, rates in machine["threads"].items():
        gflops = [f"{m['model']}: {fmt(max(m['matmul_gflop_s'][threads].values()), 0)}" for m in models]
        rows.append([threads, fmt(rates["read_gb_s"]), fmt(rates["copy_gb_s"]), "; ".join(gflops)])
    print_table(
        "5a. This machine: memory bandwidth (1 GiB, best of several) and fp32 matmul rate "
        "(256 rows × the model's shapes, best shape)",
        ["torch threads", "read GB/s", "copy GB/s (read + write)", "matmul GFLOP/s"],
        rows,
    )


def print_floors(models: list[dict]) -> None:
    rows = []
    for m in models:
        for batch in BATCHES:
            floor = m["floor_ms"][batch]
            for source, value in m["measured_ms"][batch].items():
                rows.append(
                    [
                        m["model"],
                        batch,
                        f"{fmt(floor)} ({m['floor_bound'][batch]})",
                        source,
                        fmt(value),
                        f"{fmt(value / floor if value else None, 2)}×",
                        fmt(1000 * batch / floor, 0),
                        fmt(1000 * batch / value if value else None, 0),
                    ]
                )
    print_table(
        "5b. Greedy decoding step: floor vs measured (floor = max(weight bytes / read bandwidth, "
        "2·params·batch / matmul rate))",
        [
            "model",
            "batch",
            "floor ms/step",
            "measured by",
            "measured ms/step",
            "measured / floor",
            "floor tok/s",
            "measured tok/s",
        ],
        rows,
    )
    print(NOISE_NOTE)


def goal_rows(models: list[dict]) -> list[list[str]]:
    """The issue's three goals, from benchmarks 1 and 2, each beside the floor it is bounded by."""
    latency = {(r["model"], r["strategy"]): r for r in (read_json("latency") or {"summary": []})["summary"]}
    concurrency = read_json("concurrency") or {"summary": [], "idle_lag_ms": {}}
    rows = []
    for m in models:
        name, floor = m["model"], m["floor_ms"]
        for load in (
            r
            for r in concurrency["summary"]
            if r["model"] == name and r["users"] == 8 and r["max_batch_size"] > 1 and r["workload"] != "mixed lengths"
        ):
            rows.append(
                [
                    name,
                    f"8 users ({load['workload']}) ≤ 2.5× one alone",
                    _with_spread(load["times_one_alone"], load["times_one_alone_range"]),
                    _verdict(load["times_one_alone"], load["times_one_alone_range"], 2.5, lower_is_better=True),
                    f"≈ {fmt(floor[8] / floor[1], 2)}× (step floor at 8 ÷ at 1)",
                ]
            )
        greedy = latency.get((name, "greedy"))
        for variant, v in (greedy or {"variants": {}})["variants"].items():
            if variant.startswith("plain"):
                rows.append(
                    [
                        name,
                        f"batch-1 greedy speed vs {variant} ≥ 1.0",
                        _with_spread(v["speed_ratio"], v["speed_ratio_range"]),
                        _verdict(v["speed_ratio"], v["speed_ratio_range"], 1.0, lower_is_better=False),
                        f"service at {fmt(_service_ms(greedy) / floor[1], 2)}× the floor",
                    ]
                )
        p99 = max((r["lag_p99_ms"] for r in concurrency["summary"] if r["model"] == name), default=None)
        if p99 is not None:
            idle = percentile(concurrency["idle_lag_ms"].get(name, []), 99)
            rows.append(
                [
                    name,
                    "event-loop lag p99 ≤ 50 ms (worst scenario)",
                    f"{fmt(p99)} ms",
                    "yes" if p99 <= 50 else "**no**",
                    f"idle loop on this machine: p99 {fmt(idle)} ms",
                ]
            )
    return rows


def _with_spread(value: float, spread: list[float]) -> str:
    return f"{value:.3f}×" + (f" (repetitions {spread[0]:.2f}–{spread[1]:.2f})" if len(spread) == 2 else "")


def _verdict(value: float, spread: list[float], target: float, *, lower_is_better: bool) -> str:
    """yes / no by the median; "tie" when the median misses but the repetitions straddle the target."""
    met = value <= target if lower_is_better else value >= target
    if met:
        return "yes"
    straddles = len(spread) == 2 and spread[0] <= target <= spread[1]
    return "tie (within the spread)" if straddles else "**no**"


def _service_ms(row: dict) -> float:
    return next(v["per_token_ms"] for k, v in row["variants"].items() if k.startswith("service"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tries per measurement")
    run(parser.parse_args(argv).quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
