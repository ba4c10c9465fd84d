"""Benchmark 1: per-token time and time to first token at batch 1, Taleweaver's service against
plain `model.generate` on the same loaded model, interleaved in one run.

The service runs as the bot runs it (its worker thread, `model.cpu_threads` torch threads, its
own seeded sampler). Plain `generate` gets the Hugging Face sampling config
(`native_sampling=True`) and is measured both with torch's default threads and with the
service's thread count: thread count is process-wide, so it is set before every measurement.
Per-token time is the time after the first token divided by the tokens after it, so the prompt's
forward pass is counted once, in the time to first token. Beam search streams nothing, so its
per-token time is the whole time over the tokens and it has no time to first token. CPU time per
token (the whole process's, over the whole request) is reported too: on a shared machine it moves
far less than wall time, so it shows the service's own overhead more clearly.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, dataclass

import torch
from transformers.generation.streamers import BaseStreamer

from bench.common import (
    DEFAULT_THREADS,
    NOISE_NOTE,
    PROMPT,
    BenchModel,
    Scale,
    bench_models,
    fmt,
    median,
    print_table,
    scale,
    service_config,
    set_threads,
    write_json,
)
from core.service import StoryRequest
from core.settings import DecodingSettings
from model.decoding import to_generation_config
from model.loading import LoadedModel, load_model
from model.service import ModelService

STRATEGIES: dict[str, DecodingSettings] = {
    "greedy": DecodingSettings(strategy="greedy", repetition_penalty=1.0),
    "beam 4": DecodingSettings(strategy="beam", num_beams=4, repetition_penalty=1.0),
    "top-k 50": DecodingSettings(strategy="sampling", top_k=50, top_p=1.0, temperature=1.0, repetition_penalty=1.0),
    "nucleus 0.95, T 0.8": DecodingSettings(
        strategy="sampling", top_k=0, top_p=0.95, temperature=0.8, repetition_penalty=1.0
    ),
}
"""The four ways of decoding the issue names; repetition controls off so only the search differs."""


@dataclass
class Timing:
    """What one generation took: wall time to the first token and to the end, and process CPU time."""

    ttft_s: float | None
    total_s: float
    cpu_s: float
    new_tokens: int
    threads: int


@dataclass
class Run(Timing):
    """One measured generation, with what it was."""

    model: str = ""
    strategy: str = ""
    variant: str = ""
    rep: int = 0

    @property
    def cpu_per_token_s(self) -> float:
        return self.cpu_s / max(self.new_tokens, 1)

    @property
    def per_token_s(self) -> float:
        if self.ttft_s is not None and self.new_tokens > 1:
            return (self.total_s - self.ttft_s) / (self.new_tokens - 1)
        return self.total_s / max(self.new_tokens, 1)


class FirstTokenClock(BaseStreamer):
    """Notes when `generate` hands over its first new token (its first `put` is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def plain_generate(loaded: LoadedModel, settings: DecodingSettings, seed: int, threads: int) -> Timing:
    """`model.generate` as a Hugging Face user would call it."""
    threads = set_threads(threads)
    tokenizer = loaded.tokenizer
    inputs = tokenizer(PROMPT, return_tensors="pt").to(loaded.device)
    config = to_generation_config(
        settings, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, native_sampling=True
    )
    clock = None if settings.strategy == "beam" else FirstTokenClock()
    torch.manual_seed(seed)
    cpu, started = time.process_time(), time.perf_counter()
    output = loaded.model.generate(**inputs, generation_config=config, streamer=clock)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    ttft = clock.first - started if clock is not None and clock.first is not None else None
    return Timing(ttft, total, cpu, output.shape[1] - inputs["input_ids"].shape[1], threads)


async def service_story(service: ModelService, settings: DecodingSettings, seed: int) -> Timing:
    """One `/story` through the service, timed from the call to its first text and to its result."""
    threads = set_threads(service.config.model.cpu_threads)
    cpu, started = time.process_time(), time.perf_counter()
    stream = await service.story(StoryRequest(user_id=1, prompt=PROMPT, settings=settings, seed=seed))
    first = None
    async for _delta in stream:
        first = first or time.perf_counter()
    result = await stream.result()
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    ttft = first - started if first is not None and settings.strategy != "beam" else None
    return Timing(ttft, total, cpu, result.new_tokens, threads)


def variants() -> list[tuple[str, int]]:
    """(label, threads) of what is compared: the service, plain at its threads, plain at torch's default."""
    threads = service_config().model.cpu_threads
    found = [("service", threads), ("plain", threads), ("plain", DEFAULT_THREADS)]
    return list(dict.fromkeys(found))


async def measure_model(bench_model: BenchModel, run_scale: Scale) -> list[Run]:
    config = service_config()
    loaded = load_model(bench_model.path, config.model.device, config.model.dtype)
    service = ModelService(loaded, config)
    await service.start()
    runs: list[Run] = []
    try:
        await _warm_up(loaded, service)
        for rep in range(run_scale.reps):
            for strategy, settings in STRATEGIES.items():
                settings = settings.replace(max_new_tokens=run_scale.new_tokens)
                order = variants()
                shift = rep % len(order)
                for label, threads in order[shift:] + order[:shift]:
                    if not _worth_measuring(label, threads, strategy):
                        continue
                    seed = 1234 + rep
                    if label == "service":
                        timing = await service_story(service, settings, seed)
                    else:
                        timing = plain_generate(loaded, settings, seed, threads)
                    runs.append(
                        Run(
                            **asdict(timing),
                            model=bench_model.name,
                            strategy=strategy,
                            variant=f"{label}@{threads}",
                            rep=rep,
                        )
                    )
    finally:
        await service.close()
    return runs


def _worth_measuring(label: str, threads: int, strategy: str) -> bool:
    """Plain `generate` at torch's default threads runs for greedy only (the goal's comparison): on a
    busy machine its threads fight for the cores and it is 4-12× slower than the rest whatever the
    strategy, so measuring every strategy that way would take most of the run to say it again."""
    return not (
        label == "plain" and threads == DEFAULT_THREADS != service_config().model.cpu_threads and strategy != "greedy"
    )


async def _warm_up(loaded: LoadedModel, service: ModelService) -> None:
    """First calls pay one-off costs (kernel selection, lazy imports) that no user pays twice."""
    for strategy, settings in STRATEGIES.items():
        short = settings.replace(max_new_tokens=3)
        await service_story(service, short, 0)
        for label, threads in variants()[1:]:
            if _worth_measuring(label, threads, strategy):
                plain_generate(loaded, short, 0, threads)


def summarise(runs: list[Run]) -> list[dict]:
    """Medians per (model, strategy, variant), and speed ratios paired within each repetition."""
    summary = []
    for model in dict.fromkeys(r.model for r in runs):
        for strategy in STRATEGIES:
            by_variant: dict[str, list[Run]] = {}
            for run in runs:
                if run.model == model and run.strategy == strategy:
                    by_variant.setdefault(run.variant, []).append(run)
            service = next(group for variant, group in by_variant.items() if variant.startswith("service"))
            summary.append(
                {
                    "model": model,
                    "strategy": strategy,
                    "variants": {v: _variant_summary(group, service) for v, group in by_variant.items()},
                }
            )
    return summary


def _variant_summary(group: list[Run], service: list[Run]) -> dict:
    service_by_rep = {r.rep: r for r in service}
    pairs = [(service_by_rep[r.rep], r) for r in group if r.rep in service_by_rep]
    ttfts = [r.ttft_s * 1000 for r in group if r.ttft_s is not None]
    ttft_ratios = [p.ttft_s / s.ttft_s for s, p in pairs if p.ttft_s is not None and s.ttft_s is not None]
    return {
        "threads": group[0].threads,
        "samples": len(group),
        "new_tokens": median([r.new_tokens for r in group]),
        "per_token_ms": median([r.per_token_s * 1000 for r in group]),
        "cpu_ms_per_token": median([r.cpu_per_token_s * 1000 for r in group]),
        "ttft_ms": median(ttfts) if ttfts else None,
        "speed_ratio": median([p.per_token_s / s.per_token_s for s, p in pairs]),
        "speed_ratio_range": _range([p.per_token_s / s.per_token_s for s, p in pairs]),
        "cpu_ratio": median([p.cpu_per_token_s / s.cpu_per_token_s for s, p in pairs]),
        "ttft_ratio": median(ttft_ratios) if ttft_ratios else None,
    }


def _range(values: list[float]) -> list[float]:
    """Lowest and highest of the per-repetition values: the spread a median hides."""
    return [min(values), max(values)] if values else []


def print_summary(summary: list[dict], run_scale: Scale) -> None:
    labels = list(dict.fromkeys(label for row in summary for label in row["variants"]))
    service = next(label for label in labels if label.startswith("service"))
    plain = [label for label in labels if label.startswith("plain")]

    def cell(row: dict, label: str, key: str, digits: int = 1, suffix: str = "") -> str:
        value = row["variants"].get(label, {}).get(key)
        return fmt(value, digits) + suffix if value is not None else "—"

    headers = [
        "model",
        "strategy",
        *(f"{label} ms/token" for label in (service, *plain)),
        *(f"speed vs {label}" for label in plain),
        f"CPU ms/token {service}",
        *(f"CPU ms/token {label}" for label in plain),
        f"TTFT {service} ms",
        *(f"TTFT {p} ms" for p in plain),
    ]
    rows = [
        [
            row["model"],
            row["strategy"],
            *(cell(row, label, "per_token_ms") for label in (service, *plain)),
            *(cell(row, label, "speed_ratio", 2, "×") for label in plain),
            *(cell(row, label, "cpu_ms_per_token") for label in (service, *plain)),
            *(cell(row, label, "ttft_ms", 0) for label in (service, *plain)),
        ]
        for row in summary
    ]
    print_table(
        f"1. Batch 1, {run_scale.new_tokens} new tokens: service vs plain `generate` "
        f"(medians of {run_scale.reps}; @N = torch threads)",
        headers,
        rows,
    )
    print(
        "speed vs plain = plain ms/token ÷ service ms/token, paired per repetition (≥ 1.0: the service is at "
        "least as fast). CPU = the process's CPU time over the whole request ÷ tokens. Beam search streams "
        "nothing: no TTFT, per-token = whole time ÷ tokens. Plain at torch's default threads: greedy only."
    )
    print(NOISE_NOTE)


def run(run_scale: Scale) -> dict:
    runs: list[Run] = []
    for bench_model in bench_models():
        runs += asyncio.run(measure_model(bench_model, run_scale))
    summary = summarise(runs)
    print_summary(summary, run_scale)
    payload = {
        "scale": asdict(run_scale),
        "prompt": PROMPT,
        "summary": summary,
        "runs": [{**asdict(r), "per_token_s": r.per_token_s} for r in runs],
    }
    write_json("latency", payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer tokens and one repetition")
    run(scale(parser.parse_args(argv).quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
