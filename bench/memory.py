"""Benchmark 4: peak memory (RSS) of a process doing what the bot process does.

Each measurement is a fresh child process, because peak RSS only ever grows: it imports discord,
torch and transformers, loads the model through `model.loading.load_model` with config.yaml's
device and dtype in one precision (`model.precision`: each of fp32 and int8, and what `auto`
picks), starts a `ModelService` (which prepares /why as config.yaml says) and writes one 50-token
story with the bot's default settings, then prints its peak RSS at each stage and its RSS at the
end. A child that only imports gives the floor every model adds to.

The peak is the kernel's high-water mark of the child's own memory (`VmHWM`). Its
`getrusage(RUSAGE_SELF).ru_maxrss` is printed too, but Linux carries the exec-ing parent's peak
into it, so after this benchmark's parent has held a model it reads the parent's size, not the
child's; it is right only when the parent is small (the two agree then).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict

from bench.common import ROOT, bench_models, fmt, print_table, scale, write_json

STORY_TOKENS = 50
PRECISIONS = ("auto", "fp32", "int8")
"""And bf16 where the CPU runs it natively (elsewhere nobody would choose it)."""


def _status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmHWM: peak RSS of this process image; VmRSS: now)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    return _status_mib("VmHWM")


def _ru_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(model_dir: str | None, precision: str = "auto") -> dict:
    """Run inside the child: the bot's imports, model load and one story; peak RSS after each."""
    stages = {}
    import discord  # noqa: F401  (the bot process holds discord.py too)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    stages["imports"] = _peak_mib()
    if model_dir is None:
        return {"stages_peak_mib": stages, "current_mib": _status_mib("VmRSS"), "ru_maxrss_mib": _ru_maxrss_mib()}
    import asyncio

    from bench.common import service_config
    from core.service import StoryRequest
    from model.loading import load_model
    from model.service import ModelService

    config = service_config()
    loaded = load_model(model_dir, config.model.device, config.model.dtype, precision=precision)
    stages["model loaded"] = _peak_mib()

    async def one_story() -> int:
        service = ModelService(loaded, config)
        await service.start()
        try:
            settings = config.defaults.replace(max_new_tokens=STORY_TOKENS)
            stream = await service.story(StoryRequest(user_id=1, prompt="Once upon a time", settings=settings, seed=0))
            return (await stream.result()).new_tokens
        finally:
            await service.close()

    new_tokens = asyncio.run(one_story())
    stages["after one story"] = _peak_mib()
    return {
        "stages_peak_mib": stages,
        "current_mib": _status_mib("VmRSS"),
        "ru_maxrss_mib": _ru_maxrss_mib(),
        "new_tokens": new_tokens,
        "precision": loaded.precision.mode,
    }


def measure(model_dir: str | None, precision: str = "auto") -> dict:
    """Run the child in a fresh interpreter and read the JSON it prints last."""
    command = [sys.executable, "-m", "bench.memory", "--child", model_dir or "none", "--precision", precision]
    done = subprocess.run(command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    results = {"imports only": measure(None)}
    import torch

    from model.precision import not_native  # here: the children measure their own imports

    native_bf16 = not_native("bf16", torch.device("cpu")) is None
    for bench_model in bench_models():
        for precision in (*PRECISIONS, "bf16") if native_bf16 else PRECISIONS:
            results[f"{bench_model.model}, {precision}"] = measure(str(bench_model.path), precision)
    rows = []
    for name, result in results.items():
        stages = result["stages_peak_mib"]
        rows.append(
            [
                name,
                fmt(stages["imports"], 0),
                fmt(stages.get("model loaded"), 0),
                fmt(stages.get("after one story"), 0),
                fmt(result["current_mib"], 0),
                fmt(result["ru_maxrss_mib"], 0),
                result.get("precision", "—"),
            ]
        )
    print_table(
        f"4. Peak RSS (MiB) of a bot-like process: imports (discord, torch, transformers), "
        f"load_model, ModelService, one {STORY_TOKENS}-token story",
        [
            "process",
            "after imports",
            "after loading",
            f"after one {STORY_TOKENS}-token story (peak)",
            "at the end (current)",
            "ru_maxrss",
            "precision",
        ],
        rows,
    )
    print("Peak = VmHWM of the child; ru_maxrss also holds the parent's peak at exec (see the module docstring).")
    payload = {"scale": asdict(scale(quick)), "story_tokens": STORY_TOKENS, "results": results}
    write_json("memory", payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="(no effect: one child per model either way)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(None if args.child == "none" else args.child, args.precision)))
        return 0
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
