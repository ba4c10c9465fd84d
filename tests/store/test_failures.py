"""Run-time failures of the storage: a clear message for the user, the old data intact, and the
store working again once the cause is gone."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from store import Scope, SqlitePreferencesStore, StoreUnavailableError
from store.errors import unavailable
from tests.store.conftest import OpenStore, sqlite_writer

USER = 1001


HOLD_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


async def test_a_write_while_another_process_holds_the_lock_is_refused_and_reads_go_on(
    open_store: OpenStore, db_path: Path
) -> None:
    """Busy: the write fails with a message after the busy timeout; reads still work (WAL)."""
    store = await open_store(busy_timeout_s=0.2)
    await store.set(Scope.USER, USER, {"top_k": 7})
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_WRITE_LOCK,
        str(db_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"locked\n"
        with pytest.raises(StoreUnavailableError, match="busy. Please try again in a moment"):
            await store.set(Scope.USER, USER, {"top_k": 8})
        assert await store.get(Scope.USER, USER) == {"top_k": 7}
    finally:
        holder.stdin.write(b"\n")
        await holder.stdin.drain()
        await holder.wait()
    assert await store.set(Scope.USER, USER, {"top_k": 8}) == {"top_k": 8}


async def test_a_full_disk_refuses_the_write_whole_and_keeps_the_old_values(store: SqlitePreferencesStore) -> None:
    """SQLITE_FULL: a message for the user, no partial write, and writes resume when space returns."""
    db = sqlite_writer(store)
    ((pages,),) = db.execute("PRAGMA page_count").fetchall()
    db.execute(f"PRAGMA max_page_count = {pages}")
    every_field = {
        "strategy": "beam",
        "temperature": 0.5,
        "top_k": 7,
        "top_p": 0.9,
        "num_beams": 3,
        "repetition_penalty": 1.2,
        "no_repeat_ngram_size": 2,
        "seed": 1,
        "max_new_tokens": 50,
    }
    saved_users = []
    with pytest.raises(StoreUnavailableError, match="disk is full"):
        for user in range(1, 10_000):
            await store.set(Scope.USER, user, every_field)
            saved_users.append(user)
    failed_user = saved_users[-1] + 1
    assert await store.get(Scope.USER, failed_user) == {}
    assert await store.get(Scope.USER, saved_users[-1]) == every_field

    db.execute("PRAGMA max_page_count = 1073741823")
    assert await store.set(Scope.USER, failed_user, every_field) == every_field


async def test_a_read_only_database_refuses_writes_with_a_message(store: SqlitePreferencesStore) -> None:
    """SQLITE_READONLY (a remount, a permission change): the user hears it, nothing changes."""
    await store.set(Scope.USER, USER, {"top_k": 7})
    sqlite_writer(store).execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailableError, match="read-only"):
        await store.set(Scope.USER, USER, {"top_k": 8})
    assert await store.get(Scope.USER, USER) == {"top_k": 7}


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (5, "busy"),
        (6, "busy"),
        (8, "read-only"),
        (13, "disk is full"),
        (10, "could not be reached"),
        (11, "could not be reached"),
        (266, "could not be reached"),
    ],
)
def test_each_sqlite_failure_has_a_message_that_says_nothing_changed(code: int, words: str) -> None:
    """Every failure maps to a message for the user; extended codes map like their primary code."""
    error = sqlite3.OperationalError("boom")
    error.sqlite_errorcode = code
    message = unavailable(error).message
    assert words in message
    assert message.endswith("Nothing was changed.")
    assert "boom" not in message
