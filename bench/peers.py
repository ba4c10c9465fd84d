"""Taleweaver against a dedicated CPU inference engine (CTranslate2), same models, same run.

One story at a time (four in turn, summed) and eight at once, with the bot's default decoding
(config.yaml: sampling, top-k 40, temperature 0.8, repetition penalty 1.1), one thread. Taleweaver runs through its own
`ModelService` with the bot's config, once per precision mode (`model.precision`: fp32, bf16,
int8, and what `auto` picks for the model); CTranslate2 runs its `Generator` on the same model
converted by its own converter, in float32 and int8. Every engine and load is repeated over
interleaved rounds; the table gives medians in tokens per second, and each Taleweaver mode's
ratio to CTranslate2 int8 and fp32 paired by round. Each run is timed twice: by the wall clock and
by the process's CPU time (all its threads). On a machine shared with other work the wall clock
measures the scheduler as much as the engine; tokens per CPU second are what one core of its
own would give, and the ratios are taken on those.

CTranslate2 is a benchmark dependency only (requirements-bench.txt), never the bot's.

    python -m bench.peers [--quick] [--rounds 3] [--modes fp32 int8 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PROMPTS,
    BenchModel,
    bench_models,
    config,
    fmt,
    machine_info,
    print_table,
    service_config,
    set_threads,
    write_json,
)
from core.service import StoryRequest
from model import precision
from model.loading import load_model, pick_device
from model.service import ModelService

LOADS = (1, 8)
ALONE = 4
"""The "1 story" load is this many stories written one after another (other prompts and seeds): a
single story's length is chance (one ended by its model after 46 tokens, its prefill then weighing
on its tokens per second as it would not on another's)."""
CT2_TYPES = ("float32", "int8")


@dataclass(frozen=True)
class Engine:
    """One way of writing stories: `write(rows, first)` writes `rows` stories at once, from prompt and
    seed `first` on, and returns (tokens written, wall seconds, CPU seconds)."""

    name: str
    write: Callable[[int, int], tuple[int, float, float]]
    close: Callable[[], None] = lambda: None

    def load(self, rows: int) -> tuple[int, float, float]:
        """One run of a load: `rows` stories at once, or for one, `ALONE` in turn (summed)."""
        if rows > 1:
            return self.write(rows, 0)
        runs = [self.write(1, first) for first in range(ALONE)]
        return sum(r[0] for r in runs), sum(r[1] for r in runs), sum(r[2] for r in runs)


def new_tokens_for(bench_model: BenchModel, quick: bool) -> int:
    if quick:
        return 8
    return 100 if "gpt2" in bench_model.model else 200


def taleweaver(bench_model: BenchModel, mode: str, new_tokens: int, auto: str) -> Engine:
    base = service_config()
    why = base.why.model_copy(update={"prepare_at_start": False})  # stories only: no /why copy to make
    cfg = base.model_copy(update={"why": why})
    loaded = load_model(bench_model.path, cfg.model.device, cfg.model.dtype, precision=mode)
    settings = cfg.defaults.replace(max_new_tokens=new_tokens, seed=None)

    # One service for the whole benchmark, as the bot keeps one (a new one per story paid its worker
    # thread's first calls again: the shipped model wrote 262 tokens/s that way).
    loop = asyncio.new_event_loop()
    service = ModelService(loaded, cfg)
    loop.run_until_complete(service.start())

    async def stories(rows: int, first: int) -> tuple[int, float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        streams = [
            await service.story(StoryRequest(3000 + i, PROMPTS[i % len(PROMPTS)], settings, seed=i))
            for i in range(first, first + rows)
        ]
        results = [await stream.result() for stream in streams]
        return sum(r.new_tokens for r in results), time.perf_counter() - started, time.process_time() - cpu

    def close() -> None:
        loop.run_until_complete(service.close())
        loop.close()

    label = f"Taleweaver {mode}" + (" (auto's choice)" if mode == auto else "")
    return Engine(label, lambda rows, first: loop.run_until_complete(stories(rows, first)), close)


def ctranslate2_engines(bench_model: BenchModel, new_tokens: int, workdir: Path) -> list[Engine]:
    import ctranslate2
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer

    out = workdir / bench_model.path.name
    TransformersConverter(str(bench_model.path)).convert(str(out), force=True)
    tokenizer = AutoTokenizer.from_pretrained(bench_model.path)
    defaults = config().defaults
    engines = []
    for compute_type in CT2_TYPES:
        generator = ctranslate2.Generator(str(out), device="cpu", compute_type=compute_type, intra_threads=1)

        def write(rows: int, first: int, generator=generator) -> tuple[int, float, float]:
            prompts = [
                tokenizer.convert_ids_to_tokens(tokenizer(PROMPTS[i % len(PROMPTS)])["input_ids"])
                for i in range(first, first + rows)
            ]
            started, cpu = time.perf_counter(), time.process_time()
            results = generator.generate_batch(
                prompts,
                max_length=new_tokens,
                sampling_topk=defaults.top_k,
                sampling_temperature=defaults.temperature,
                repetition_penalty=defaults.repetition_penalty,
                include_prompt_in_result=False,
            )
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            return sum(len(r.sequences_ids[0]) for r in results), took, cpu

        engines.append(Engine(f"CTranslate2 {compute_type}", write))
    return engines


def measure(bench_model: BenchModel, modes: list[str], rounds: int, quick: bool, workdir: Path) -> dict:
    new_tokens = new_tokens_for(bench_model, quick)
    auto = precision.choose("auto", bench_model.path, pick_device(config().model.device))
    print(f"  {bench_model.model}: `model.precision: auto` picks {auto.mode} ({auto.reason})", flush=True)
    engines = [taleweaver(bench_model, mode, new_tokens, auto.mode) for mode in modes]
    if importlib.util.find_spec("ctranslate2") is None:
        print("note: ctranslate2 is not installed (pip install -r requirements-bench.txt); its rows are skipped")
    else:
        engines += ctranslate2_engines(bench_model, new_tokens, workdir)
    for engine in engines:  # warm-up: first calls allocate, pack and convert
        engine.write(1, 0)
    runs: dict[str, dict[int, list[tuple[int, float, float]]]] = {e.name: {rows: [] for rows in LOADS} for e in engines}
    for round_ in range(rounds):
        for rows in LOADS:
            for engine in engines if round_ % 2 == 0 else engines[::-1]:
                runs[engine.name][rows].append(engine.load(rows))
        print(f"  {bench_model.model}: round {round_ + 1} of {rounds} done", flush=True)
    for engine in engines:
        engine.close()
    return {
        "model": bench_model.model,
        "new_tokens": new_tokens,
        "auto": auto.mode,
        "auto_reason": auto.reason,
        "runs": runs,
    }


def summarise(result: dict) -> list[dict]:
    """Medians of tokens/s (wall clock and CPU time), and ratios of tokens per CPU second to each
    CTranslate2 type, paired by round."""
    runs = result["runs"]
    rows = []
    for name, by_load in runs.items():
        for load, samples in by_load.items():
            per_cpu_s = [tokens / cpu for tokens, _, cpu in samples]
            row = {
                "model": result["model"],
                "engine": name,
                "load": load,
                "tokens_per_s": statistics.median(tokens / wall for tokens, wall, _ in samples),
                "tokens_per_cpu_s": statistics.median(per_cpu_s),
                "tokens_per_story": statistics.median(
                    tokens / (load if load > 1 else ALONE) for tokens, _, _ in samples
                ),
            }
            for peer in (f"CTranslate2 {t}" for t in CT2_TYPES):
                if peer in runs and not name.startswith("CTranslate2"):
                    theirs = [tokens / cpu for tokens, _, cpu in runs[peer][load]]
                    row[f"x {peer}"] = statistics.median(a / b for a, b in zip(per_cpu_s, theirs, strict=True))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 tokens, one round: checks that all runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=precision.MODES,
        help="Taleweaver's precisions (default: those this CPU runs natively; emulated bf16 is 25x slower)",
    )
    parser.add_argument("--only", choices=("shipped", "gpt2"), help="one of the two models")
    args = parser.parse_args(argv)
    threads = set_threads(service_config().model.cpu_threads)
    print(f"{machine_info()}\ntorch threads: {threads}")
    rounds = 1 if args.quick else args.rounds
    device = pick_device(config().model.device)
    modes = args.modes or [m for m in precision.MODES if precision.not_native(m, device) is None]
    results = []
    with tempfile.TemporaryDirectory(prefix="taleweaver-ct2-") as workdir:
        for bench_model in bench_models():
            if args.only and (args.only == "gpt2") != ("gpt2" in bench_model.model):
                continue
            results.append(measure(bench_model, modes, rounds, args.quick, Path(workdir)))
    rows = [row for result in results for row in summarise(result)]
    print_table(
        f"Tokens per second, one thread, the bot's default sampling; medians of {rounds} interleaved rounds "
        "(ratios: tokens per CPU second, paired by round)",
        [
            "model",
            "load",
            "engine",
            "tokens/s (wall)",
            "tokens per CPU s",
            "tokens a story",
            "× CTranslate2 int8",
            "× CTranslate2 fp32",
        ],
        [
            [
                r["model"],
                f"1 story ({ALONE} in turn)" if r["load"] == 1 else f"{r['load']} at once",
                r["engine"],
                fmt(r["tokens_per_s"]),
                fmt(r["tokens_per_cpu_s"]),
                fmt(r["tokens_per_story"], 0),
                fmt(r.get("x CTranslate2 int8"), 2),
                fmt(r.get("x CTranslate2 float32"), 2),
            ]
            for r in sorted(rows, key=lambda r: (r["model"], r["load"]))
        ],
    )
    write_json("peers", {"rounds": rounds, "results": results, "summary": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
