"""The store on SQLite and on PostgreSQL: reads and writes per second, latency, and the time a
`/settings set` takes end to end, each against the plain way.

    .venv/bin/python -m bench.store [--quick] [--ops 1000] [--postgres-url URL] [--no-e2e]

SQLite is a real file under bench/results/ (WAL, `synchronous=FULL`: a write's time includes its
fsync). PostgreSQL is a server started for the run on loopback (Debian's binaries, as the tests
start it; fsync on), or `--postgres-url` with its password in TALEWEAVER_DATABASE_PASSWORD. The
plain way is the store before SQLAlchemy: hand-written SQL on one aiosqlite connection, the
same statements and transactions. Latency is measured one operation at a time, the databases
interleaved in rounds; throughput with 1 and 16 concurrent callers. End to end: `python bot.py`
on each database behind the Discord stand-in, the time from a user's `/settings set` to its
reply. Prints tables and writes bench/results/store.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bench.common import RESULTS_DIR, fmt, machine_info, percentile, print_table
from core.settings import DecodingSettings
from store import ResolvedSettings, Scope, SqlitePreferencesStore, resolve_settings
from store.postgres import PostgresPreferencesStore
from store.preferences import _decode as decode
from store.validation import check_values

USERS, GUILD = 1_000, 555
ROUNDS = 3
CONCURRENCY = (1, 16)
Operation = Callable[[int], Awaitable[object]]


@dataclass
class Subject:
    """One way of storing preferences, and its operations by name."""

    name: str
    operations: dict[str, Operation]
    close: Callable[[], Awaitable[None]]


def user_of(i: int) -> int:
    return i % USERS + 1


def store_operations(store: Any) -> dict[str, Operation]:
    return {
        "read: resolve (what /story does)": lambda i: store.resolve(user_of(i), GUILD),
        "read: get one user's settings": lambda i: store.get(Scope.USER, user_of(i)),
        "write: set one setting": lambda i: store.set(Scope.USER, user_of(i), {"temperature": 0.05 + (i % 100) / 100}),
        "write: set three settings": lambda i: store.set(
            Scope.USER, user_of(i), {"top_k": i % 500, "top_p": 0.5, "seed": i}
        ),
    }


async def fill(store: Any) -> None:
    for user in range(1, USERS + 1):
        await store.set(Scope.USER, user, {"temperature": 0.7, "top_k": user % 500, "seed": user})
    await store.set(Scope.SERVER, GUILD, {"top_p": 0.9})
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 200})


class PlainSqlite:
    """The store before SQLAlchemy, reduced to these operations: one aiosqlite connection for writes
    (`BEGIN IMMEDIATE` … `COMMIT`, read back before the commit) and one for reads, each behind a
    lock; values checked, decoded and resolved by the same functions as the store's."""

    LAYERS = (
        "SELECT 'user', field, value FROM user_settings WHERE user_id = ? "
        "UNION ALL SELECT 'server', field, value FROM guild_settings WHERE guild_id = ? "
        "UNION ALL SELECT 'server limit', field, value FROM guild_limits WHERE guild_id = ?"
    )
    SELECT = "SELECT field, value FROM user_settings WHERE user_id = ?"

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer, self._reader = writer, reader
        self._write_lock, self._read_lock = asyncio.Lock(), asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> PlainSqlite:
        writer = await aiosqlite.connect(path, isolation_level=None)
        await writer.execute("PRAGMA synchronous = FULL")
        reader = await aiosqlite.connect(path, isolation_level=None)
        await reader.execute("PRAGMA query_only = ON")
        return cls(writer, reader)

    async def resolve(self, user: int, guild: int) -> ResolvedSettings:
        async with self._read_lock:
            rows = await self._reader.execute_fetchall(self.LAYERS, (user, guild, guild))
        layers: dict[Scope, list] = {scope: [] for scope in Scope}
        for scope, name, value in rows:
            layers[Scope(scope)].append((name, value))
        decoded = {scope: decode(scope, layer) for scope, layer in layers.items()}
        return resolve_settings(
            config_defaults=DecodingSettings(),
            max_new_tokens_cap=300,
            server=decoded[Scope.SERVER],
            user=decoded[Scope.USER],
            server_limits=decoded[Scope.SERVER_LIMIT],
        )

    async def get(self, user: int) -> dict[str, Any]:
        async with self._read_lock:
            rows = await self._reader.execute_fetchall(self.SELECT, (user,))
        return decode(Scope.USER, rows)

    async def set(self, user: int, values: dict[str, Any]) -> dict[str, Any]:
        checked = check_values(Scope.USER, values, max_new_tokens_cap=300, server_limits={})
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            await self._writer.executemany(
                "INSERT INTO user_settings (user_id, field, value) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
                [(user, name, json.dumps(value)) for name, value in sorted(checked.items())],
            )
            stored = decode(Scope.USER, await self._writer.execute_fetchall(self.SELECT, (user,)))
            await self._writer.execute("COMMIT")
        assert all(stored[name] == value for name, value in checked.items())
        return checked

    def operations(self) -> dict[str, Operation]:
        return {
            "read: resolve (what /story does)": lambda i: self.resolve(user_of(i), GUILD),
            "read: get one user's settings": lambda i: self.get(user_of(i)),
            "write: set one setting": lambda i: self.set(user_of(i), {"temperature": 0.05 + (i % 100) / 100}),
            "write: set three settings": lambda i: self.set(user_of(i), {"top_k": i % 500, "top_p": 0.5, "seed": i}),
        }

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()


@contextlib.asynccontextmanager
async def subjects(folder: Path, postgres: tuple[str, str] | None) -> AsyncIterator[list[Subject]]:
    """SQLite through the store, the plain way on a copy of its file, and PostgreSQL through the store."""
    common = {"config_defaults": DecodingSettings(), "max_new_tokens_cap": 300}
    sqlite_store = await SqlitePreferencesStore.open(folder / "store.db", **common)
    await fill(sqlite_store)
    await sqlite_store.close()
    (folder / "plain.db").write_bytes((folder / "store.db").read_bytes())
    sqlite_store = await SqlitePreferencesStore.open(folder / "store.db", **common)
    plain = await PlainSqlite.open(folder / "plain.db")
    found = [
        Subject("SQLite, plain aiosqlite", plain.operations(), plain.close),
        Subject("SQLite", store_operations(sqlite_store), sqlite_store.close),
    ]
    if postgres is not None:
        url, password = postgres
        pg_store = await PostgresPreferencesStore.open(url, password=password, **common)
        await fill(pg_store)
        found.append(Subject("PostgreSQL", store_operations(pg_store), pg_store.close))
    try:
        yield found
    finally:
        for subject in found:
            await subject.close()


async def latencies(subjects_: list[Subject], ops: int) -> dict[tuple[str, str], list[float]]:
    """Seconds per call, one call at a time; the subjects take turns, ROUNDS times."""
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(ROUNDS):
        for operation in subjects_[0].operations:
            for subject in subjects_:
                run = subject.operations[operation]
                for i in range(20):
                    await run(i)
                samples = times.setdefault((subject.name, operation), [])
                for i in range(round_ * ops, (round_ + 1) * ops):
                    started = time.perf_counter()
                    await run(i)
                    samples.append(time.perf_counter() - started)
    return times


async def throughput(run: Operation, callers: int, ops: int) -> float:
    """Operations per second with `callers` running at once, `ops` in all."""
    counter = iter(range(ops))

    async def caller() -> None:
        for i in counter:
            await run(i)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return ops / (time.perf_counter() - started)


async def measure(folder: Path, postgres: tuple[str, str] | None, ops: int) -> dict[str, Any]:
    async with subjects(folder, postgres) as found:
        times = await latencies(found, ops)
        rates: dict[tuple[str, str, int], float] = {}
        for operation in ("read: resolve (what /story does)", "write: set one setting"):
            for callers in CONCURRENCY:
                for subject in found:
                    rates[(subject.name, operation, callers)] = await throughput(
                        subject.operations[operation], callers, ops
                    )
    rows = []
    plain = found[0].name
    for (name, operation), samples in times.items():
        median = statistics.median(samples)
        rows.append(
            {
                "database": name,
                "operation": operation,
                "ops": len(samples),
                "median_ms": median * 1e3,
                "p90_ms": percentile(samples, 90) * 1e3,
                "p99_ms": percentile(samples, 99) * 1e3,
                "per_second_one_at_a_time": len(samples) / sum(samples),
                "median_vs_plain": median / statistics.median(times[(plain, operation)]),
            }
        )
    rate_rows = [
        {"database": name, "operation": operation, "callers": callers, "per_second": rate}
        for (name, operation, callers), rate in rates.items()
    ]
    return {"latency": rows, "throughput": rate_rows}


async def settings_end_to_end(postgres: tuple[str, str] | None, folder: Path, count: int) -> list[dict[str, Any]]:
    """`/settings set` from a user's command to the bot's reply, with `python bot.py` on each database."""
    from playground.standin import ManualClock, StandInConfig
    from playground.standin.client import DriverClient
    from tests.e2e.harness import BOT_TOKEN, BotProcess, StandInThread, bot_config, write_config
    from tests.scale.test_two_processes import wait_for_shards
    from tests.tiny_model import build_tiny_model

    model = build_tiny_model(folder / "tiny-gpt2", n_positions=1024)
    databases: list[tuple[str, dict[str, Any], dict[str, str]]] = [("SQLite", {"path": str(folder / "e2e.db")}, {})]
    if postgres is not None:
        databases.append(("PostgreSQL", {"url": postgres[0]}, {"TALEWEAVER_DATABASE_PASSWORD": postgres[1]}))
    results = []
    for name, database, env in databases:
        standin = StandInThread(StandInConfig(clock=ManualClock(), bot_token=BOT_TOKEN))
        standin.run(standin.standin.start())
        workdir = folder / f"e2e-{name}"
        workdir.mkdir()
        config = bot_config(model, workdir / "unused.db")
        config["database"] = database
        config["log_level"] = "INFO"
        bot = BotProcess(write_config(workdir, config), standin.standin.api_base, workdir / "bot.log", env=env)
        bot.start()
        try:
            wait_for_shards(standin, bot, {0}, after=0)
            samples = []
            async with DriverClient(standin.standin.api_base) as driver:
                for i in range(count + 5):
                    started = time.perf_counter()
                    interaction = await driver.command("bob", "settings set", {"top_k": i % 500})
                    elapsed = time.perf_counter() - started
                    assert interaction["status"] == "acknowledged", interaction
                    if i >= 5:
                        samples.append(elapsed)
        finally:
            bot.stop()
            standin.close()
        results.append(
            {
                "database": name,
                "commands": len(samples),
                "median_ms": statistics.median(samples) * 1e3,
                "p90_ms": percentile(samples, 90) * 1e3,
                "p99_ms": percentile(samples, 99) * 1e3,
            }
        )
    return results


@contextlib.contextmanager
def postgres_for(url: str | None):
    """(URL, password) of the PostgreSQL to measure: the one given, or a server started for the run."""
    if url:
        yield url, os.environ.get("TALEWEAVER_DATABASE_PASSWORD", "")
        return
    from tests.pg_server import start_server, stop_server

    server = start_server()
    try:
        yield server.url(server.create_database()), server.password
    finally:
        stop_server(server)


def report(results: dict[str, Any]) -> None:
    print_table(
        "Store latency, one operation at a time (ms; ratio: median against plain aiosqlite)",
        ["database", "operation", "median", "p90", "p99", "ops/s", "× plain"],
        [
            [
                row["database"],
                row["operation"],
                fmt(row["median_ms"], 3),
                fmt(row["p90_ms"], 3),
                fmt(row["p99_ms"], 3),
                fmt(row["per_second_one_at_a_time"], 0),
                fmt(row["median_vs_plain"], 2),
            ]
            for row in results["latency"]
        ],
    )
    print_table(
        "Store throughput (operations per second)",
        ["database", "operation", "callers", "ops/s"],
        [[r["database"], r["operation"], r["callers"], fmt(r["per_second"], 0)] for r in results["throughput"]],
    )
    if results.get("settings_end_to_end"):
        rows = results["settings_end_to_end"]
        base = rows[0]["median_ms"]
        print_table(
            "`/settings set` end to end: the user's command to the bot's reply, through the stand-in (ms)",
            ["database", "commands", "median", "p90", "p99", "extra median vs SQLite"],
            [
                [
                    r["database"],
                    r["commands"],
                    fmt(r["median_ms"]),
                    fmt(r["p90_ms"]),
                    fmt(r["p99_ms"]),
                    fmt(r["median_ms"] - base),
                ]
                for r in rows
            ],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000, help="operations per measurement and round (default 1000)")
    parser.add_argument("--quick", action="store_true", help="100 operations, 10 commands end to end")
    parser.add_argument("--postgres-url", help="measure this PostgreSQL instead of starting one")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-e2e", action="store_true", help="skip `/settings set` end to end (starts two bots)")
    args = parser.parse_args(argv)
    ops = 100 if args.quick else args.ops
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS_DIR) as folder, contextlib.ExitStack() as stack:
        postgres = None if args.no_postgres else stack.enter_context(postgres_for(args.postgres_url))
        results = asyncio.run(measure(Path(folder), postgres, ops))
        if not args.no_e2e:
            results["settings_end_to_end"] = asyncio.run(
                settings_end_to_end(postgres, Path(folder), 10 if args.quick else 60)
            )
    results |= {"sqlite": sqlite3.sqlite_version, "machine": machine_info(), "rounds": ROUNDS}
    report(results)
    (RESULTS_DIR / "store.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS_DIR / 'store.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
