"""Staggered arrivals: static batching (whole batches in turn) against continuous batching.

Stories arrive while others are being written: a burst (one story, then five more 0.5 s apart),
eight at once, and Poisson arrivals at two rates. Both modes run through the bot's own
`ModelService` on the same model in the same run, interleaved scenario by scenario, with the
bot's default decoding (sampling, top-k 40, T 0.8, repetition 1.1) and a fixed seed per story.
Reported: time to first text (p50/p95: all stories, and the late arrivals of the burst), total
time, tokens/s, and the goals of the continuous-batching issue: late arrivals' first text within
3× a lone story's, eight stories at once within 2× one.

"× one" is measured two ways. "× lone" divides a scenario's total time by story 1's time alone,
as earlier runs did. But the stories differ in length (a story that ends its sentence can run a
few dozen tokens past the limit: 303 to 340 steps on the shipped model), and eight at once last as
long as the longest of them, while story 1 is the shortest; so each story is also divided by its
own time alone (same prompt, seed and mode): what each user waits, against what they would wait
with the machine to themselves.

    python -m bench.arrivals [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass

from bench.common import (
    PROMPTS,
    add_precision_option,
    bench_models,
    fmt,
    load_bench_model,
    machine_info,
    percentile,
    print_table,
    service_config,
    set_threads,
    write_json,
)
from core.service import StoryRequest
from model.loading import LoadedModel
from model.service import ModelService

MODES = ("static", "continuous")


@dataclass(frozen=True)
class Arrivals:
    name: str
    times: tuple[float, ...]
    """When each story arrives, in seconds from the start."""


def scenarios(quick: bool) -> list[Arrivals]:
    rng = random.Random(7)

    def poisson(rate: float, count: int) -> tuple[float, ...]:
        t, times = 0.0, []
        for _ in range(count):
            times.append(t)
            t += rng.expovariate(rate)
        return tuple(times)

    burst = Arrivals("burst: 1, then 5 more 0.5 s apart", tuple(0.5 * i for i in range(6)))
    chosen = [Arrivals("lone", (0.0,)), burst, Arrivals("8 at once", (0.0,) * 8)]
    if not quick:
        chosen += [
            Arrivals("Poisson 1/s, 8 stories", poisson(1.0, 8)),
            Arrivals("Poisson 4/s, 8 stories", poisson(4.0, 8)),
        ]
    return chosen


@dataclass
class Run:
    model: str
    mode: str
    scenario: str
    total_s: float
    first_text_s: list[float]
    tokens: int
    story_s: list[float]
    """Each story's time from its arrival to its last token, by story number."""
    repeat: int = 0


async def run_arrivals(
    loaded: LoadedModel, model: str, mode: str, arrivals: Arrivals, new_tokens: int, first_story: int = 0
) -> Run:
    """Stories number `first_story`, `first_story` + 1, … (each its own prompt and seed) arriving at
    `arrivals.times`."""
    base = service_config(max_batch_size=8)
    service_cfg = base.service.model_copy(update={"continuous_batching": mode == "continuous"})
    config = base.model_copy(update={"service": service_cfg})
    service = ModelService(loaded, config)
    await service.start()
    set_threads(config.model.cpu_threads)
    settings = config.defaults.replace(max_new_tokens=new_tokens, seed=None)
    started = time.perf_counter()

    async def one(index: int, at: float) -> tuple[float, int, float]:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - started)))
        submitted = time.perf_counter()
        request = StoryRequest(2000 + index, PROMPTS[index % len(PROMPTS)], settings, seed=index)
        stream = await service.story(request)
        first = None
        async for _ in stream:
            first = first or time.perf_counter()
        result = await stream.result()
        done = time.perf_counter()
        return (first or done) - submitted, result.new_tokens, done - submitted

    try:
        outcomes = await asyncio.gather(*(one(first_story + i, at) for i, at in enumerate(arrivals.times)))
    finally:
        await service.close()
    total = time.perf_counter() - started
    return Run(
        model,
        mode,
        arrivals.name,
        total,
        [f for f, _, _ in outcomes],
        sum(n for _, n, _ in outcomes),
        [s for _, _, s in outcomes],
    )


async def alone_times(loaded: LoadedModel, model: str, count: int, new_tokens: int) -> dict[str, list[float]]:
    """Each of stories 0 … count − 1 written alone, in each mode: what one round's per-story
    slowdowns divide by."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for story in range(count):
        for mode in MODES if story % 2 == 0 else MODES[::-1]:
            run = await run_arrivals(loaded, model, mode, Arrivals("alone", (0.0,)), new_tokens, story)
            times[mode].append(run.story_s[0])
    return times


async def measure(
    quick: bool, shipped_tokens: int, gpt2_tokens: int, repeats: int = 1, precision: str | None = None
) -> tuple[list[Run], dict[tuple[str, str, int], list[float]]]:
    """Each scenario in each mode `repeats` times, in interleaved rounds; each round also writes
    every story alone (by model, mode and round: what that round's slowdowns divide by)."""
    runs: list[Run] = []
    alone: dict[tuple[str, str, int], list[float]] = {}
    for bench_model in bench_models(precision):
        loaded = load_bench_model(bench_model)
        tokens = shipped_tokens if "gpt2" not in bench_model.name else gpt2_tokens
        await run_arrivals(loaded, bench_model.name, "continuous", Arrivals("warm-up", (0.0, 0.0)), 4)
        most = max(len(arrivals.times) for arrivals in scenarios(quick))
        for repeat in range(repeats):
            for mode, times in (await alone_times(loaded, bench_model.name, most, tokens)).items():
                alone[(bench_model.name, mode, repeat)] = times
            for index, arrivals in enumerate(scenarios(quick)):
                modes = MODES if (index + repeat) % 2 == 0 else MODES[::-1]
                for mode in modes:
                    run = await run_arrivals(loaded, bench_model.name, mode, arrivals, tokens)
                    run.repeat = repeat
                    runs.append(run)
                    print(f"  {bench_model.name} {mode:<10} {arrivals.name}: {run.total_s:.1f} s", flush=True)
    return runs, alone


def summarise(runs: list[Run], alone: dict[tuple[str, str, int], list[float]]) -> list[dict]:
    """One row per model, scenario and mode: each figure is the median over the rounds, and the
    ratios are paired by round (this scenario's run ÷ the lone run, or each story alone, of its round)."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.model, run.scenario, run.mode), []).append(run)
    rows = []
    for (model, scenario, mode), group in groups.items():
        figures = [_figures(run, _lone(runs, run), alone[(model, mode, run.repeat)]) for run in group]
        row = {"model": model, "scenario": scenario, "mode": mode, "repeats": len(group)}
        row.update({key: percentile([f[key] for f in figures], 50) for key in figures[0]})
        rows.append(row)
    return rows


def _lone(runs: list[Run], run: Run) -> Run:
    return next(r for r in runs if (r.model, r.mode, r.scenario, r.repeat) == (run.model, run.mode, "lone", run.repeat))


def _figures(run: Run, lone: Run, by_itself: list[float]) -> dict[str, float]:
    late = run.first_text_s[1:] if run.scenario.startswith("burst") else run.first_text_s
    slowdowns = [took / by_itself[story] for story, took in enumerate(run.story_s)]
    return {
        "total_s": run.total_s,
        "first_text_p50_s": percentile(run.first_text_s, 50),
        "first_text_p95_s": percentile(run.first_text_s, 95),
        "late_first_text_p50_x_lone": percentile(late, 50) / lone.first_text_s[0],
        "late_first_text_max_x_lone": max(late) / lone.first_text_s[0],
        "total_x_lone": run.total_s / lone.total_s,
        "story_x_alone_p50": percentile(slowdowns, 50),
        "story_x_alone_max": max(slowdowns),
        "tokens_per_s": run.tokens / run.total_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.arrivals", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 tokens, burst and 8 at once only")
    parser.add_argument("--tokens", type=int, default=300, help="new tokens per story on the shipped model")
    parser.add_argument("--gpt2-tokens", type=int, default=100, help="new tokens per story on GPT-2 small")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of every scenario (medians are reported; --quick: one)"
    )
    add_precision_option(parser)
    args = parser.parse_args(argv)
    tokens, gpt2_tokens = (16, 16) if args.quick else (args.tokens, args.gpt2_tokens)
    runs, alone = asyncio.run(
        measure(args.quick, tokens, gpt2_tokens, 1 if args.quick else args.repeats, args.precision)
    )
    rows = summarise(runs, alone)
    print_table(
        f"Staggered arrivals ({tokens} new tokens a story on the shipped model, {gpt2_tokens} on GPT-2 small)",
        [
            "model",
            "arrivals",
            "batching",
            "total s",
            "× lone",
            "each story × itself alone p50 / max",
            "first text p50 / p95 s",
            "late first text p50 / max × lone",
            "tokens/s",
        ],
        [
            [
                r["model"],
                r["scenario"],
                r["mode"],
                fmt(r["total_s"]),
                f"{r['total_x_lone']:.2f}×",
                f"{r['story_x_alone_p50']:.2f}× / {r['story_x_alone_max']:.2f}×",
                f"{fmt(r['first_text_p50_s'], 2)} / {fmt(r['first_text_p95_s'], 2)}",
                f"{r['late_first_text_p50_x_lone']:.1f}× / {r['late_first_text_max_x_lone']:.1f}×",
                fmt(r["tokens_per_s"]),
            ]
            for r in rows
        ],
    )
    write_json("arrivals", {"machine": machine_info(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
