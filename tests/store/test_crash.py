"""A process killed in the middle of writes leaves a database that opens, with every
acknowledged write and no half-applied one."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from store import Scope
from store.preferences import SqlPreferencesStore
from tests.store.conftest import OpenStore
from tests.store.crash_writer import USER, values_of

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6


async def run_writer_until_killed(
    target: Path | str,
    first: int,
    acks_before_kill: int,
    *,
    env: dict[str, str] | None = None,
    kill_server: Callable[[], None] | None = None,
) -> int:
    """Start the writer, SIGKILL it (or, with `kill_server`, the database server first) after
    that many acknowledged writes; return the last write acknowledged."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.crash_writer",
        str(target),
        str(first),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"open\n"
        last_ack = first - 1
        for _ in range(acks_before_kill):
            last_ack = int(await asyncio.wait_for(process.stdout.readline(), 30))
        if kill_server is not None:
            kill_server()
            # Writes go on being acknowledged until the writer finds the server gone.
            while (line := await asyncio.wait_for(process.stdout.readline(), 30)) != b"failed\n":
                assert line, f"the writer exited ({await process.wait()})"
                last_ack = int(line)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # Every write it printed before the kill landed was acknowledged too.
        for line in (await process.stdout.read()).split():
            if line.isdigit():
                last_ack = int(line)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return last_ack


async def check_the_saved_write(store: SqlPreferencesStore, last_ack: int) -> int:
    """The saved write is the last one acknowledged or the one in flight, whole; closes the store
    and returns the number the next writer starts at."""
    saved = await store.get(Scope.USER, USER)
    await store.close()
    assert last_ack <= saved["seed"] <= last_ack + 1
    assert saved == values_of(saved["seed"])
    return saved["seed"] + 1


async def test_sigkill_mid_writes_keeps_every_acknowledged_write_and_no_half_write(
    open_store: OpenStore, db_path: Path
) -> None:
    """After each kill the file opens, passes integrity_check, and holds one whole write: the last
    acknowledged one, or the one in flight when the process died."""
    rng = random.Random(4)
    first = 1
    for _ in range(ROUNDS):
        last_ack = await run_writer_until_killed(db_path, first, rng.randint(5, 60))
        first = await check_the_saved_write(await open_store(), last_ack)
        with sqlite3.connect(db_path) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
