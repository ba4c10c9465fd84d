"""Run the benchmarks in order: `python -m bench [--quick] [--only NAME]`.

Latency and concurrency come before the floor, which compares their results with what this machine
allows. Benchmarks other rooms own (strategies, why, store) run after ours when they are there; one
that fails is reported and the rest still run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import time
import traceback
from types import ModuleType

OURS = ("latency", "concurrency", "memory", "floor")
BENCHMARKS = (*OURS, "exactness", "strategies", "why", "store")
NEEDS_SHIPPED_MODEL = ("strategies",)
"""These score the shipped model's text, so there is nothing to run until it is trained."""


def has_quick(name: str, module: ModuleType) -> bool:
    return name in OURS or '"--quick"' in inspect.getsource(module)


def run_one(name: str, module: ModuleType, quick: bool) -> bool:
    """Call the benchmark's `main` (with --quick only where it has one); True when it succeeded."""
    # Not every benchmark takes argv: give a main() that reads sys.argv itself a clean one.
    argv = ["--quick"] if quick and has_quick(name, module) else []
    takes_argv = bool(inspect.signature(module.main).parameters)
    saved = sys.argv
    sys.argv = [f"bench/{name}.py", *([] if takes_argv else argv)]
    try:
        status = module.main(argv) if takes_argv else module.main()
    except SystemExit as exit_:
        status = exit_.code
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        sys.argv = saved
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
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"\n(bench/{name}.py is not there; skipped)")
            continue
        if name in NEEDS_SHIPPED_MODEL and shipped_model_dir() is None:
            print(f"\n({name} needs the shipped model, which is not there yet; skipped)")
            continue
        module = importlib.import_module(f"bench.{name}")
        if args.quick and not args.only and not has_quick(name, module):
            print(f"\n(bench/{name}.py has no --quick, so a quick run skips it: python -m bench --only {name})")
            continue
        print(f"\n## {name}\n", flush=True)
        begun = time.perf_counter()
        if not run_one(name, module, args.quick):
            failed.append(name)
        print(f"\n({name}: {time.perf_counter() - begun:.0f} s)", flush=True)
    print(f"\nall done in {time.perf_counter() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
