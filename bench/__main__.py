"""Run the benchmarks in order: `python -m bench [--quick] [--only NAME]`.

Latency and concurrency come before the floor, which compares their results with what this
machine allows. Every benchmark is a module here with `main(argv) -> int` that takes `--quick`;
one that fails is reported and the rest still run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

BENCHMARKS = (
    "latency",
    "concurrency",
    "arrivals",
    "peers",
    "kernels",
    "memory",
    "floor",
    "exactness",
    "strategies",
    "why",
    "store",
    "serve",
)
NEEDS_SHIPPED_MODEL = ("strategies",)
"""These score the shipped model's text, so there is nothing to run until it is trained."""


def run_one(name: str, quick: bool) -> bool:
    """Call the benchmark's `main`; True when it succeeded."""
    module = importlib.import_module(f"bench.{name}")
    try:
        status = module.main(["--quick"] if quick else [])
    except SystemExit as exit_:
        status = exit_.code
        if isinstance(status, str):
            print(status, file=sys.stderr)
    except Exception:
        traceback.print_exc()
        status = 1
    return not status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few tokens, one repetition: checks that all runs")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this one (repeatable)")
    args = parser.parse_args(argv)
    from bench.common import NOISE_NOTE, machine_info, shipped_model_dir

    print(f"# Taleweaver benchmarks ({'quick' if args.quick else 'full'} run)\n\n{machine_info()}\n{NOISE_NOTE}")
    started = time.perf_counter()
    failed = []
    for name in args.only or BENCHMARKS:
        if name in NEEDS_SHIPPED_MODEL and shipped_model_dir() is None:
            print(f"\n({name} needs the shipped model, which is not there yet; skipped)")
            continue
        print(f"\n## {name}\n", flush=True)
        begun = time.perf_counter()
        if not run_one(name, args.quick):
            failed.append(name)
        print(f"\n({name}: {time.perf_counter() - begun:.0f} s)", flush=True)
    print(f"\nall done in {time.perf_counter() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
