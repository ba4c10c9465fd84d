"""The precision stories are written in (fp32, bf16 or int8), and how `auto` picks one.

A lower precision is allowed only on measured evidence, per model and per CPU: the precision gate
(`python -m model.precision_gate MODEL_DIR`) writes `precision-gate.json` into the model's
directory with, for each mode, held-out bits per byte against fp32, whether the same seed gave the
same stories alone and batched, and tokens per second on the CPU it ran on. The file keeps one
report per kind of CPU the gate ran on (a run on another CPU adds its own beside the others), so a
model shipped with reports for several machines is fast on each. `auto` then takes the fastest
mode that passed, among those this CPU runs natively, from the report measured on this kind of
CPU; otherwise (no gate, another model's gate, only other CPUs' reports) it keeps fp32 and says
why. A changed model, or the same model on another machine, never inherits a choice that nobody
measured for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from model import int8
from model.cpu_features import NATIVE_BF16, cpu_flags

log = logging.getLogger(__name__)

Mode = Literal["fp32", "bf16", "int8"]
MODES: tuple[Mode, ...] = ("fp32", "bf16", "int8")
GATE_FILE = "precision-gate.json"
MAX_BPB_INCREASE = 0.01
"""A mode passes the quality gate when its bits per byte are at most 1 % above fp32's on every file."""
MIN_SPEED_GAIN = 1.05
"""`auto` leaves fp32 only for a mode at least this much faster (a mode changes the stories' words,
and a few percent is within this machine's noise)."""


@dataclass(frozen=True)
class PrecisionChoice:
    """The mode in force and why it was chosen (logged at start, served on /readyz and /metrics)."""

    mode: str
    reason: str


@functools.cache
def cpu_signature() -> str:
    """What decides which mode is fastest: the CPU model, its vector features, torch, and which int8
    kernel runs (a gate measured with another one, or another version of Taleweaver's own, does
    not apply)."""
    name = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), name)
    except OSError:
        pass
    features = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    return f"{name} | {' '.join(features)} | torch {torch.__version__} | int8 {int8.kernels_signature()}"


def not_native(mode: str, device: torch.device) -> str | None:
    """Why this device would run `mode` slowly or not at all; None when it runs it natively."""
    if mode == "fp32":
        return None
    if mode == "int8":
        if device.type != "cpu":
            return "int8 weights are a CPU mode (FBGEMM)"
        return None if int8.available() else "this torch build has no FBGEMM int8 kernels"
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    if cpu_flags() & NATIVE_BF16:
        return None
    return "this CPU has no bf16 instructions (AVX-512-BF16 or AMX): torch emulates them, slower than fp32"


def apply(model: PreTrainedModel, mode: str, source: str | Path | None = None) -> None:
    """Put a loaded fp32 model into `mode` (in place); int8 reads its weights again from `source`'s
    files when it can (`int8.safetensors_reader`: the loaded ones are never paged in)."""
    if mode == "bf16":
        model.to(torch.bfloat16)
    elif mode == "int8":
        read = None if source is None else int8.safetensors_reader(source, model.base_model_prefix)
        count = int8.quantize_linears(model, read=read)
        int8.release_replaced_weights()
        kernels = Counter(m.kernel for m in model.modules() if isinstance(m, int8.Int8Linear))
        log.info("int8: %d matrices quantized (%s)", count, ", ".join(f"{n} on {k}" for k, n in kernels.items()))


def weights_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the model's weight files, so a gate result never applies to other weights."""
    digest = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def read_gates(model_dir: str | Path) -> list[dict[str, Any]]:
    """Every report in `model_dir`'s gate file, one per CPU it ran on (a file written before reports
    were kept per CPU holds one report at its top level); [] when there is none or it cannot be read."""
    path = Path(model_dir) / GATE_FILE
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        log.warning("ignoring the unreadable precision gate %s", path, exc_info=True)
        return []
    reports = content.get("reports", [content]) if isinstance(content, dict) else []
    return [r for r in reports if isinstance(r, dict) and isinstance(r.get("modes"), dict)]


def read_gate(model_dir: str | Path) -> dict[str, Any] | None:
    """The gate's report for this CPU in `model_dir`; else the last one written (measured on another
    CPU, which `choose` says); None when there is none."""
    reports = read_gates(model_dir)
    here = cpu_signature()
    same_machine = [r for r in reports if _machine(str(r.get("cpu"))) == _machine(here)]
    exact = [r for r in same_machine if r.get("cpu") == here]
    return (exact or same_machine or reports or [None])[-1]


def _machine(signature: str) -> str:
    """A CPU signature without its int8 kernels: the machine the gate ran on, whatever Taleweaver's version."""
    return signature.rsplit(" | int8 ", 1)[0]


def with_report(reports: list[dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
    """The gate file's content once `report` is added: it replaces the report of its own CPU, and
    reports of other weights go (they can no longer apply)."""
    kept = [
        r
        for r in reports
        if r.get("cpu") != report.get("cpu") and r.get("weights_sha256") == report.get("weights_sha256")
    ]
    return {"reports": [*kept, report]}


def choose(setting: str, model_dir: str | Path | None, device: torch.device) -> PrecisionChoice:
    """The mode for `model.precision` (`auto`, or a mode asked for by name)."""
    if setting != "auto":
        problem = not_native(setting, device)
        if setting == "int8" and problem:
            raise ValueError(f"`model.precision: int8` cannot run here: {problem}.")
        if problem:
            log.warning("model.precision is %s, but %s", setting, problem)
        return PrecisionChoice(setting, "asked for in config.yaml")
    report = read_gate(model_dir) if model_dir is not None and Path(model_dir).is_dir() else None
    if report is None:
        return PrecisionChoice("fp32", "auto: no precision gate for this model (python -m model.precision_gate)")
    if report.get("weights_sha256") != weights_fingerprint(model_dir):
        return PrecisionChoice("fp32", "auto: the precision gate was measured on other weights; run it again")
    return _fastest_passed(report, device)


def _fastest_passed(report: dict[str, Any], device: torch.device) -> PrecisionChoice:
    passed = [m for m in MODES if m != "fp32" and report["modes"].get(m, {}).get("passed")]
    if not passed:
        return PrecisionChoice("fp32", "auto: no lower precision passed the gate for this model")
    native = [m for m in passed if not_native(m, device) is None]
    if not native:
        return PrecisionChoice("fp32", f"auto: {', '.join(passed)} passed the gate, but this CPU runs none natively")
    if report.get("cpu") != cpu_signature():
        if _machine(str(report.get("cpu"))) == _machine(cpu_signature()):
            return PrecisionChoice("fp32", "auto: the gate ran on this CPU with other int8 kernels; run it again")
        return PrecisionChoice("fp32", "auto: the gate's speeds were measured on another CPU; run it on this one")
    speeds = {m: report["modes"][m].get("speedup") for m in native}
    best = max(native, key=lambda m: speeds[m] or 0.0)
    if not speeds[best] or speeds[best] < MIN_SPEED_GAIN:
        return PrecisionChoice("fp32", f"auto: {', '.join(native)} passed the gate but was not faster here")
    return PrecisionChoice(best, f"auto: passed the gate and {speeds[best]:.2f}x fp32's speed on this CPU")
