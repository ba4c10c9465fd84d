"""The precision gate: may this model write stories in bf16 or int8 on this CPU? Measured, per model.

    python -m model.precision_gate MODEL_DIR [--eval FILE ...] [--modes fp32 int8 ...]

For each mode, against fp32 in the same run:

- **quality**: held-out bits per byte on each eval file (by default the tales eval and the
  TinyStories valid file); a mode passes when it is at most 1 % above fp32 on every file;
- **determinism**: stories written alone and the same stories in one continuous batch (half
  arriving together, the rest joining while the others are written), greedy and the bot's default
  sampling, same seeds: a mode passes when every story is identical;
- **speed** on this CPU: tokens per second through the engine, one story and eight at once, the
  modes interleaved over rounds (medians); `auto` needs a mode to be faster, and takes the fastest.

The report is printed and written to `MODEL_DIR/precision-gate.json`, with the weights' SHA-256
and the CPU it ran on, which is what `model.precision: auto` reads at start (`model.precision`).
The file keeps one report per kind of CPU: a run replaces its own CPU's report and keeps the
others measured on the same weights. Rerun it whenever the model changes (its weights' hash must
match) or on another kind of CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.config import ROOT
from core.settings import DecodingSettings
from model import precision
from model.engine import ContinuousBatch
from model.generation import RowJob
from model.loading import LoadedModel, load_model
from model.training.corpus import SEPARATOR, CorpusFile, build_blocks, read_corpus
from model.training.perplexity import evaluate

EVAL_FILES = (
    ROOT.parent / "shared" / "corpus" / "tales" / "eval.txt",
    ROOT.parent / "shared" / "corpus" / "tinystories" / "valid-v2-public.txt",
)
PROMPTS = (
    "Once upon a time there lived a king who had three daughters, and the youngest",
    "The fox said to the crow",
    "Holmes looked at the letter for a long while and then",
    "A poor miller had three sons",
    "It was a dark and stormy night, and the old house on the hill",
    "The little mermaid swam up to the surface and saw",
    "One day, a little girl named Lily found a needle in her room.",
    "Tom and his dog went to the park",
)
STRATEGIES = {
    "greedy": DecodingSettings(strategy="greedy", repetition_penalty=1.0),
    "bot defaults": DecodingSettings(),
}


@dataclass
class Options:
    model_dir: Path
    eval_files: list[Path]
    modes: list[str]
    new_tokens: int
    rounds: int
    threads: int
    max_bytes: int | None = None


def bits_per_byte(loaded: LoadedModel, path: Path, max_bytes: int | None = None) -> float:
    """Held-out bits per byte of `path` (its first documents up to `max_bytes`, if given), read in
    blocks of the model's context (one block a pass)."""
    corpus = read_corpus(path, "evaluation")
    if max_bytes is not None:
        corpus = _first_documents(corpus, max_bytes)
    blocks = build_blocks(corpus, "evaluation", loaded.tokenizer, loaded.model.config.n_positions)
    with torch.inference_mode():
        return evaluate(loaded.model, blocks, batch_size=1).bits_per_byte(corpus.n_bytes)


def _first_documents(corpus: CorpusFile, max_bytes: int) -> CorpusFile:
    """The first documents of `corpus` that fit in `max_bytes` (at least one), counted as the file
    holds them: each followed by a separator line."""
    kept, size = [], 0
    for document in corpus.documents:
        length = len(document.encode("utf-8")) + len(SEPARATOR) + 2
        if kept and size + length > max_bytes:
            break
        kept.append(document)
        size += length
    return dataclasses.replace(corpus, documents=kept, n_bytes=size)


def stories(loaded: LoadedModel, jobs: list[RowJob], *, joining: bool) -> list[str]:
    """The stories through the continuous batch: all alone (one run each), or half arriving
    together and the rest joining one by one while the others are written."""
    if not joining:
        return [_run(loaded, [job], [])[0] for job in jobs]
    half = len(jobs) // 2
    return _run(loaded, jobs[:half], jobs[half:])


def _run(loaded: LoadedModel, first: list[RowJob], later: list[RowJob]) -> list[str]:
    done: dict[int, str] = {}
    rows = [
        RowJob(job.prompt, job.settings, job.seed, on_done=lambda out, i=i: done.__setitem__(i, out.continuation))
        for i, job in enumerate(first + later)
    ]
    engine = ContinuousBatch(loaded, on_error=lambda job, exc: None, max_rows=len(rows))
    engine.start(rows[: len(first)])
    worker = threading.Thread(target=engine.run)
    worker.start()
    for index, row in enumerate(rows[len(first) :]):
        while engine.stats.steps < 3 * (index + 1) and worker.is_alive():
            time.sleep(0.001)
        if not engine.submit(row):  # the others ended first: this one runs on its own
            worker.join()
            engine.start([row])
            worker = threading.Thread(target=engine.run)
            worker.start()
    worker.join()
    return [done.get(i, "") for i in range(len(rows))]


def identical(loaded: LoadedModel, new_tokens: int) -> tuple[int, int]:
    """How many stories came out the same alone and batched, out of how many."""
    same = total = 0
    for settings in STRATEGIES.values():
        jobs = [RowJob(p, settings.replace(max_new_tokens=new_tokens), 1000 + i) for i, p in enumerate(PROMPTS)]
        alone, batched = stories(loaded, jobs, joining=False), stories(loaded, jobs, joining=True)
        same += sum(a == b for a, b in zip(alone, batched, strict=True))
        total += len(jobs)
    return same, total


def tokens_per_s(loaded: LoadedModel, rows: int, new_tokens: int) -> float:
    settings = DecodingSettings(max_new_tokens=new_tokens)
    jobs = [RowJob(PROMPTS[i % len(PROMPTS)], settings, i) for i in range(rows)]
    counts: list[int] = []
    for job in jobs:
        job.on_done = lambda out: counts.append(out.new_tokens)
    engine = ContinuousBatch(loaded, on_error=lambda job, exc: None, max_rows=rows)
    engine.start(jobs)
    started = time.perf_counter()
    engine.run()
    return sum(counts) / (time.perf_counter() - started)


def speeds(models: dict[str, LoadedModel], options: Options) -> dict[str, dict[str, Any]]:
    """Tokens/s of each mode for 1 and 8 stories, modes interleaved, and each mode's speed-up over
    fp32: the geometric mean of its two ratios, each the median over rounds of the ratio in that round."""
    loads = (1, 8)
    measured: dict[str, dict[int, list[float]]] = {mode: {rows: [] for rows in loads} for mode in models}
    for loaded in models.values():  # warm-up: first calls allocate and pack
        tokens_per_s(loaded, 1, 4)
    for round_ in range(options.rounds):
        order = list(models) if round_ % 2 == 0 else list(models)[::-1]
        for rows in loads:
            for mode in order:
                measured[mode][rows].append(tokens_per_s(models[mode], rows, options.new_tokens))
    result = {}
    for mode, by_rows in measured.items():
        ratios = {
            rows: statistics.median(a / b for a, b in zip(by_rows[rows], measured["fp32"][rows], strict=True))
            for rows in loads
        }
        result[mode] = {
            "tokens_per_s": {str(rows): statistics.median(values) for rows, values in by_rows.items()},
            "ratio_to_fp32": {str(rows): ratio for rows, ratio in ratios.items()},
            "speedup": math.prod(ratios.values()) ** (1 / len(ratios)),
        }
    return result


def run(options: Options) -> dict[str, Any]:
    torch.set_num_threads(options.threads)
    modes = ["fp32", *[m for m in options.modes if m != "fp32"]]
    models = {mode: load_model(options.model_dir, device="cpu", precision=mode) for mode in modes}
    report: dict[str, Any] = {
        "model": str(options.model_dir),
        "weights_sha256": precision.weights_fingerprint(options.model_dir),
        "cpu": precision.cpu_signature(),
        "threads": options.threads,
        "max_bpb_increase": precision.MAX_BPB_INCREASE,
        "eval_max_bytes": options.max_bytes,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "modes": {},
    }
    fp32_bpb = {}
    for mode, loaded in models.items():
        bpb = {str(path): bits_per_byte(loaded, path, options.max_bytes) for path in options.eval_files}
        fp32_bpb = fp32_bpb or bpb
        increase = {name: value / fp32_bpb[name] - 1 for name, value in bpb.items()}
        same, total = identical(loaded, options.new_tokens)
        report["modes"][mode] = {
            "bits_per_byte": bpb,
            "increase_over_fp32": increase,
            "identical_alone_and_batched": [same, total],
            "native_here": precision.not_native(mode, loaded.device) is None,
            "passed": max(increase.values()) <= precision.MAX_BPB_INCREASE and same == total,
        }
        print(f"{mode}: bits/byte {bpb}, identical {same}/{total}", file=sys.stderr, flush=True)
    for mode, measured in speeds(models, options).items():
        report["modes"][mode].update(measured)
    return report


def markdown(report: dict[str, Any]) -> str:
    files = list(report["modes"]["fp32"]["bits_per_byte"])
    headers = [*(f"bits/byte {Path(f).parent.name}/{Path(f).name}" for f in files)]
    lines = [
        "| mode | " + " | ".join(headers) + " | same stories | tok/s 1 story | tok/s 8 at once | speed-up | passed |",
        "|" + " --- |" * (len(headers) + 6),
    ]
    for mode, row in report["modes"].items():
        bpb = [f"{row['bits_per_byte'][f]:.4f} ({row['increase_over_fp32'][f]:+.2%})" for f in files]
        same, total = row["identical_alone_and_batched"]
        tps = row.get("tokens_per_s", {})
        lines.append(
            f"| {mode} | " + " | ".join(bpb) + f" | {same}/{total} | {tps.get('1', float('nan')):.1f} | "
            f"{tps.get('8', float('nan')):.1f} | {row.get('speedup', float('nan')):.2f}× | "
            + ("yes" if row["passed"] else "no")
            + ("" if row["native_here"] else " (not native on this CPU)")
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.precision_gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--eval", dest="eval_files", type=Path, action="append", help="held-out text (repeatable)")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=precision.MODES,
        help="modes to measure against fp32 (default: those this CPU runs natively; an emulated one takes hours: "
        "bf16 without AVX-512-BF16 or AMX ran GPT-2-style blocks 25x slower than fp32 here)",
    )
    parser.add_argument("--max-bytes", type=int, help="only the first documents of each eval file, up to this size")
    parser.add_argument("--new-tokens", type=int, default=100, help="tokens per story (determinism, speed)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds (medians)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the service's `cpu_threads`)")
    parser.add_argument("--out", type=Path, help=f"where to write the report (default MODEL_DIR/{precision.GATE_FILE})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    eval_files = args.eval_files or list(EVAL_FILES)
    missing = [str(path) for path in eval_files if not path.is_file()]
    if missing or not (args.model_dir / "config.json").is_file():
        parser.error(f"not found: {', '.join(missing) or args.model_dir / 'config.json'}")
    modes = args.modes or [m for m in precision.MODES if precision.not_native(m, torch.device("cpu")) is None]
    options = Options(args.model_dir, eval_files, modes, args.new_tokens, args.rounds, args.threads, args.max_bytes)
    report = run(options)
    out = args.out or args.model_dir / precision.GATE_FILE
    content = precision.with_report(precision.read_gates(out.parent) if out.name == precision.GATE_FILE else [], report)
    out.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))
    chosen = precision.choose("auto", args.model_dir if out.parent == args.model_dir else None, torch.device("cpu"))
    print(f"\n(written to {out}; `model.precision: auto` here: {chosen.mode}, {chosen.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
