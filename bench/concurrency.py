"""Benchmarks 2 and 3: many `/story` requests at once through the service, with batching on and
off, and how late the event loop runs while they are served.

Every request comes from a different user and all are submitted together, as when a server's
members press Enter in the same second. A fresh service per scenario keeps `batches_run` honest.
Batching on is config.yaml's `max_batch_size` (8); 32 users also run with `max_batch_size` 32,
because with 8 the last quarter of them waits for three whole batches before its first word.
Batching off is `max_batch_size` 1: one request after another.

The event-loop probe sleeps 10 ms in a loop and records how late each wake-up is; the bot's
heartbeats and Discord edits run on that loop, so a late wake-up is a late reply for everyone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, dataclass

from bench.common import (
    NOISE_NOTE,
    PROMPTS,
    BenchModel,
    Scale,
    add_precision_option,
    bench_models,
    fmt,
    load_bench_model,
    median,
    percentile,
    print_table,
    scale,
    service_config,
    set_threads,
    write_json,
)
from core.service import StoryRequest
from core.settings import DecodingSettings
from model.loading import LoadedModel
from model.service import ModelService

LAG_INTERVAL_S = 0.010


@dataclass(frozen=True)
class Scenario:
    """One load: how many users, with what settings, and the most requests per batch."""

    workload: str
    users: int
    batching: str
    max_batch_size: int
    every_rep: bool = True
    """False for the 32-user loads: one sample of the slowest scenarios keeps the run short."""


def scenarios() -> list[Scenario]:
    on = service_config().service.max_batch_size
    found = [
        Scenario("greedy", 1, f"on (max {on})", on),
        Scenario("greedy", 1, "off", 1),
        Scenario("greedy", 8, f"on (max {on})", on),
        Scenario("greedy", 8, "off", 1),
        Scenario("greedy", 32, f"on (max {on})", on, every_rep=False),
        Scenario("greedy", 32, "on (max 32)", 32, every_rep=False),
        Scenario("greedy", 32, "off", 1, every_rep=False),
        Scenario("bot defaults", 1, f"on (max {on})", on),
        Scenario("bot defaults", 8, f"on (max {on})", on),
        Scenario("mixed lengths", 8, f"on (max {on})", on),
    ]
    return list(dict.fromkeys(found))


def request_settings(workload: str, index: int, new_tokens: int) -> DecodingSettings:
    """Greedy (comparable with benchmark 1 and the floor); config.yaml's defaults (what users get:
    sampling, top-k 40, repetition penalty); or greedy where one user asks for 5× what the others do."""
    if workload == "bot defaults":
        return service_config().defaults.replace(max_new_tokens=new_tokens, seed=None)
    greedy = DecodingSettings(strategy="greedy", repetition_penalty=1.0, max_new_tokens=new_tokens)
    if workload == "mixed lengths" and index > 0:
        return greedy.replace(max_new_tokens=max(1, new_tokens // 5))
    return greedy


@dataclass
class RequestTiming:
    submitted_s: float
    ttft_s: float | None
    latency_s: float
    new_tokens: int

    @property
    def after_first_s(self) -> float | None:
        """Time per token after the first, as the user sees it: the batch's decoding step, plus any
        wait for longer rows of the same batch before the result arrives."""
        if self.ttft_s is None or self.new_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.new_tokens - 1)


@dataclass
class LoadRun:
    model: str
    scenario: Scenario
    rep: int
    total_s: float
    requests: list[RequestTiming]
    lags_s: list[float]
    batches: list[int]

    @property
    def tokens_per_s(self) -> float:
        return sum(r.new_tokens for r in self.requests) / self.total_s


class LagProbe:
    """Sleeps `interval` on the event loop, over and over, and records how late each wake-up is."""

    def __init__(self, interval: float = LAG_INTERVAL_S) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._running = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def stop(self) -> list[float]:
        self._running = False
        if self._task is not None:
            await self._task
        return self.lags

    async def _probe(self) -> None:
        while self._running:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(time.perf_counter() - asked - self.interval)


async def run_load(loaded: LoadedModel, model_name: str, scenario: Scenario, rep: int, new_tokens: int) -> LoadRun:
    config = service_config(max_batch_size=scenario.max_batch_size, queue_size=scenario.users)
    service = ModelService(loaded, config)
    await service.start()
    set_threads(config.model.cpu_threads)
    probe = LagProbe()
    probe.start()
    started = time.perf_counter()

    async def one_user(index: int) -> RequestTiming:
        submitted = time.perf_counter()
        stream = await service.story(
            StoryRequest(
                user_id=1000 + index,
                prompt=PROMPTS[index % len(PROMPTS)],
                settings=request_settings(scenario.workload, index, new_tokens),
                seed=index,
            )
        )
        first = None
        async for _delta in stream:
            first = first or time.perf_counter()
        result = await stream.result()
        finished = time.perf_counter()
        return RequestTiming(
            submitted - started, first - submitted if first else None, finished - submitted, result.new_tokens
        )

    try:
        timings = await asyncio.gather(*(one_user(i) for i in range(scenario.users)))
        total = time.perf_counter() - started
    finally:
        lags = await probe.stop()
        await service.close()
    return LoadRun(model_name, scenario, rep, total, list(timings), lags, list(service.batches_run))


async def idle_lag(seconds: float = 1.0) -> list[float]:
    """The probe on an idle loop: the lag this machine adds with no model work at all."""
    probe = LagProbe()
    probe.start()
    await asyncio.sleep(seconds)
    return await probe.stop()


async def measure_model(bench_model: BenchModel, run_scale: Scale) -> tuple[list[LoadRun], list[float]]:
    loaded = load_bench_model(bench_model)
    idle = await idle_lag()
    await run_load(loaded, bench_model.name, Scenario("greedy", 2, "warm-up", 2), -1, 3)
    runs: list[LoadRun] = []
    for rep in range(run_scale.reps):
        todo = [s for s in scenarios() if s.every_rep or rep == 0]
        for scenario in todo if rep % 2 == 0 else todo[::-1]:
            runs.append(await run_load(loaded, bench_model.name, scenario, rep, run_scale.new_tokens))
    return runs, idle


def summarise(runs: list[LoadRun]) -> list[dict]:
    """Per (model, scenario): medians over repetitions, percentiles over all requests and lag samples."""
    summary = []
    for key in dict.fromkeys((r.model, r.scenario) for r in runs):
        group = [r for r in runs if (r.model, r.scenario) == key]
        requests = [t for r in group for t in r.requests]
        lags_ms = [lag * 1000 for r in group for lag in r.lags_s]
        per_token = [t.after_first_s * 1000 for t in requests if t.after_first_s is not None]
        summary.append(
            {
                "model": key[0],
                **asdict(key[1]),
                "samples": len(group),
                "total_s": median([r.total_s for r in group]),
                "times_one_alone": median(_ratios_to_one(group, runs)),
                "times_one_alone_range": _range(_ratios_to_one(group, runs)),
                "latency_p50_s": percentile([t.latency_s for t in requests], 50),
                "latency_p95_s": percentile([t.latency_s for t in requests], 95),
                "ttft_p50_s": percentile([t.ttft_s for t in requests if t.ttft_s is not None], 50),
                "ttft_p95_s": percentile([t.ttft_s for t in requests if t.ttft_s is not None], 95),
                "tokens_per_s": median([r.tokens_per_s for r in group]),
                "ms_per_token_after_first": median(per_token) if per_token else None,
                "batches": group[0].batches,
                "lag_p50_ms": percentile(lags_ms, 50),
                "lag_p99_ms": percentile(lags_ms, 99),
                "lag_max_ms": max(lags_ms, default=float("nan")),
            }
        )
    return summary


def _range(values: list[float]) -> list[float]:
    """Lowest and highest of the per-repetition values: the spread a median hides."""
    return [min(values), max(values)] if values else []


def _ratios_to_one(group: list[LoadRun], runs: list[LoadRun]) -> list[float]:
    """Total time over the time of one request alone (same model, batching on), paired by repetition;
    the one alone of "mixed lengths" is one greedy request of the long length."""
    ratios = []
    for run in group:
        workload = "greedy" if run.scenario.workload == "mixed lengths" else run.scenario.workload
        alone = [
            r
            for r in runs
            if r.model == run.model
            and r.rep == run.rep
            and r.scenario.users == 1
            and r.scenario.workload == workload
            and r.scenario.max_batch_size > 1
        ]
        if alone:
            ratios.append(run.total_s / alone[0].total_s)
    return ratios


def print_summary(summary: list[dict], idle: dict[str, list[float]], run_scale: Scale) -> None:
    rows = [
        [
            s["model"],
            s["workload"],
            s["users"],
            s["batching"],
            fmt(s["total_s"], 2),
            f"{fmt(s['times_one_alone'], 2)}×",
            fmt(s["latency_p50_s"], 2),
            fmt(s["latency_p95_s"], 2),
            fmt(s["ttft_p50_s"], 2),
            fmt(s["ttft_p95_s"], 2),
            fmt(s["tokens_per_s"]),
            fmt(s["ms_per_token_after_first"], 0),
            _batches(s["batches"]),
        ]
        for s in summary
    ]
    print_table(
        f"2. Concurrent /story requests, {run_scale.new_tokens} new tokens each "
        f"(mixed lengths: one of {run_scale.new_tokens}, seven of {max(1, run_scale.new_tokens // 5)})",
        [
            "model",
            "workload",
            "users",
            "batching",
            "total s",
            "× one alone",
            "latency p50 s",
            "latency p95 s",
            "first text p50 s",
            "first text p95 s",
            "tokens/s",
            "ms/token after first",
            "batches",
        ],
        rows,
    )
    print(
        f"Totals and ratios: medians of {run_scale.reps} repetitions (32 users: one); percentiles: over "
        "every request of every repetition. ms/token after first: (latency - first text) ÷ (tokens - 1), "
        "median over requests: one decoding step of the batch, plus any wait for the batch's longest row."
    )
    rows = [
        [
            s["model"],
            s["workload"],
            s["users"],
            s["batching"],
            fmt(s["lag_p50_ms"]),
            fmt(s["lag_p99_ms"]),
            fmt(s["lag_max_ms"]),
        ]
        for s in summary
    ]
    rows += [
        [
            model,
            "idle (no requests)",
            0,
            "—",
            fmt(percentile(ms, 50)),
            fmt(percentile(ms, 99)),
            fmt(max(ms, default=float("nan"))),
        ]
        for model, ms in idle.items()
    ]
    print_table(
        "3. Event-loop lag during benchmark 2 (a 10 ms sleep's lateness)",
        ["model", "workload", "users", "batching", "lag p50 ms", "lag p99 ms", "lag max ms"],
        rows,
    )
    print(NOISE_NOTE)


def _batches(sizes: list[int]) -> str:
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return ", ".join(f"{n}×{size}" for size, n in counts.items())


def run(run_scale: Scale, precision: str | None = None) -> dict:
    runs: list[LoadRun] = []
    idle: dict[str, list[float]] = {}
    for bench_model in bench_models(precision):
        model_runs, idle_lags = asyncio.run(measure_model(bench_model, run_scale))
        runs += model_runs
        idle[bench_model.name] = [lag * 1000 for lag in idle_lags]
    summary = summarise(runs)
    print_summary(summary, idle, run_scale)
    payload = {
        "scale": asdict(run_scale),
        "summary": summary,
        "idle_lag_ms": idle,
        "runs": [
            {
                "model": r.model,
                "scenario": asdict(r.scenario),
                "rep": r.rep,
                "total_s": r.total_s,
                "batches": r.batches,
                "lags_ms": [lag * 1000 for lag in r.lags_s],
                "requests": [{**asdict(t), "after_first_s": t.after_first_s} for t in r.requests],
            }
            for r in runs
        ],
    }
    write_json("concurrency", payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tokens and one repetition")
    add_precision_option(parser)
    args = parser.parse_args(argv)
    run(scale(args.quick), args.precision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
