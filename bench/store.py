"""Median time of a preferences read and write, over 1,000 operations each, on a real SQLite file.

    .venv/bin/python bench/store.py [--ops 1000] [--dir FOLDER]

The file lies in a temporary folder under `bench/results/` (the project's disk, like `data/`)
unless `--dir` says otherwise; it is deleted afterwards. Writes are committed with
`synchronous=FULL`, so a write's time includes its fsync. Prints a table and writes
`bench/results/store.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import DecodingSettings  # noqa: E402
from store import Scope, SqlitePreferencesStore  # noqa: E402

RESULTS = ROOT / "bench" / "results"
USERS, GUILD = 1_000, 555


async def timed(operation: Callable[[int], Awaitable[object]], ops: int) -> list[float]:
    """Seconds taken by each of `ops` calls, after a short warm-up."""
    for i in range(20):
        await operation(i)
    times = []
    for i in range(ops):
        start = time.perf_counter()
        await operation(i)
        times.append(time.perf_counter() - start)
    return times


def summary(name: str, times: list[float]) -> dict[str, float | str]:
    ordered = sorted(times)
    return {
        "operation": name,
        "ops": len(times),
        "median_ms": statistics.median(times) * 1e3,
        "p90_ms": ordered[int(0.90 * (len(ordered) - 1))] * 1e3,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
        "mean_ms": statistics.fmean(times) * 1e3,
    }


async def run(ops: int, folder: Path) -> list[dict[str, float | str]]:
    store = await SqlitePreferencesStore.open(
        folder / "bench.db", config_defaults=DecodingSettings(), max_new_tokens_cap=300
    )
    try:
        for user in range(1, USERS + 1):
            await store.set(Scope.USER, user, {"temperature": 0.7, "top_k": user % 500, "seed": user})
        await store.set(Scope.SERVER, GUILD, {"top_p": 0.9})
        await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 200})

        def user_of(i: int) -> int:
            return i % USERS + 1

        return [
            summary("read: resolve (what /story does)", await timed(lambda i: store.resolve(user_of(i), GUILD), ops)),
            summary("read: get one user's settings", await timed(lambda i: store.get(Scope.USER, user_of(i)), ops)),
            summary(
                "write: set one setting",
                await timed(lambda i: store.set(Scope.USER, user_of(i), {"temperature": 0.05 + (i % 100) / 100}), ops),
            ),
            summary(
                "write: set three settings",
                await timed(
                    lambda i: store.set(Scope.USER, user_of(i), {"top_k": i % 500, "top_p": 0.5, "seed": i}), ops
                ),
            ),
        ]
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000, help="operations per measurement (default 1000)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the database file")
    parser.add_argument("--quick", action="store_true", help="100 operations per measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.ops = 100
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir or RESULTS) as folder:
        rows = asyncio.run(run(args.ops, Path(folder)))

    print(f"{'operation':<36} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for row in rows:
        print(
            f"{row['operation']:<36} {row['median_ms']:>10.3f} {row['p90_ms']:>8.3f} {row['p99_ms']:>8.3f} "
            f"{row['mean_ms']:>8.3f}"
        )
    report = {
        "rows": rows,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.platform(),
        "journal": "WAL, synchronous=FULL",
    }
    (RESULTS / "store.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS / 'store.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
