"""SQLite at start-up: files of every older schema (before Alembic too) keep their data; files that
are not ours stay untouched. (Migrations on both databases: test_schema.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store import Scope, StoreError, migrations
from store.migrations import APPLICATION_ID, VERSION_TABLE
from store.preferences import SqlPreferencesStore
from tests.store.conftest import OpenStore
from tests.store.legacy_schema import LEGACY_VERSION, build_legacy_file

USER, GUILD = 1001, 555

ROWS_ADDED_IN: dict[int, list[tuple[str, tuple[object, ...]]]] = {
    1: [
        ("INSERT INTO user_settings VALUES (?, ?, ?)", (USER, "temperature", "0.5")),
        ("INSERT INTO user_settings VALUES (?, ?, ?)", (USER, "strategy", '"beam"')),
    ],
    2: [
        ("INSERT INTO guild_settings VALUES (?, ?, ?)", (GUILD, "top_k", "5")),
        ("INSERT INTO guild_limits VALUES (?, ?, ?)", (GUILD, "max_new_tokens", "200")),
    ],
    3: [
        ("INSERT INTO guild_story_options VALUES (?, ?)", (GUILD, False)),
    ],
}
"""Data written in each schema version's own tables, as that version of the bot would have."""

EXPECTED_AFTER: dict[int, dict[Scope, dict[str, object]]] = {
    0: {},
    1: {Scope.USER: {"temperature": 0.5, "strategy": "beam"}},
    2: {
        Scope.USER: {"temperature": 0.5, "strategy": "beam"},
        Scope.SERVER: {"top_k": 5},
        Scope.SERVER_LIMIT: {"max_new_tokens": 200},
    },
}
EXPECTED_AFTER[3] = EXPECTED_AFTER[2]


def test_every_schema_version_has_sample_data() -> None:
    """A new migration must come with rows of its own, so the tests of older schemas cover it."""
    revisions = sorted(int(script.revision) for script in migrations.script_directory().walk_revisions())
    assert sorted(ROWS_ADDED_IN) == revisions
    assert sorted(EXPECTED_AFTER) == list(range(migrations.latest_version() + 1))


async def assert_data_of(store: SqlPreferencesStore, version: int) -> None:
    """The store holds what schema `version`'s Taleweaver had written, in every layer."""
    for scope in Scope:
        owner = USER if scope is Scope.USER else GUILD
        assert await store.get(scope, owner) == EXPECTED_AFTER[version].get(scope, {})


async def build_database(path: Path, version: int) -> None:
    """A file as the Taleweaver of schema `version` (before Alembic) left it, with that version's data."""
    build_legacy_file(path, version, ROWS_ADDED_IN)


@pytest.mark.parametrize("version", range(LEGACY_VERSION + 1))
async def test_a_file_of_an_older_taleweaver_is_migrated_and_keeps_its_data(
    open_store: OpenStore, db_path: Path, version: int
) -> None:
    """From each schema written before Alembic the store reaches the latest one, every value still there."""
    await build_database(db_path, version)
    store = await open_store()
    await assert_data_of(store, version)
    if version >= 3:
        assert not await store.stories.threads_allowed(GUILD)
    story_id = await store.stories.create(USER, GUILD, 77, "Once", (await store.resolve(USER, GUILD)).settings)
    assert (await store.stories.get(story_id)).opening == "Once"
    await store.close()
    latest = migrations.latest_version()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == latest
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(f"{latest:04d}",)]
    raw.close()


async def test_a_new_file_is_created_with_its_folder(open_store: OpenStore, tmp_path: Path) -> None:
    """database.path may point into a folder that does not exist yet."""
    path = tmp_path / "a" / "b" / "prefs.db"
    await open_store(path)
    assert path.exists()


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The file's bytes and the names beside it (a -wal or -journal file would mean we wrote)."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


async def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(open_store: OpenStore, db_path: Path) -> None:
    """Somebody's notes at the database path are not overwritten."""
    db_path.parent.mkdir(parents=True)
    db_path.write_text("my notes, not a database\n" * 100)
    before = fingerprint(db_path)
    with pytest.raises(StoreError, match="not a Taleweaver database"):
        await open_store()
    assert fingerprint(db_path) == before


@pytest.mark.parametrize("application_id", [0, 0x12345678])
async def test_another_programs_sqlite_database_is_refused_and_left_untouched(
    open_store: OpenStore, db_path: Path, application_id: int
) -> None:
    """An SQLite file without our mark, or with another program's, is not ours to migrate."""
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA application_id = {application_id}")
        raw.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        raw.execute("INSERT INTO invoices VALUES (1, 9.5)")
    raw.close()
    before = fingerprint(db_path)
    with pytest.raises(StoreError, match="not a Taleweaver one"):
        await open_store()
    assert fingerprint(db_path) == before


async def test_a_database_from_a_newer_taleweaver_is_refused(open_store: OpenStore, db_path: Path) -> None:
    """A downgrade must not run an old bot on a schema it does not know."""
    await build_database(db_path, LEGACY_VERSION)
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {migrations.latest_version() + 1}")
    raw.close()
    before = fingerprint(db_path)
    with pytest.raises(StoreError, match="newer Taleweaver"):
        await open_store()
    assert fingerprint(db_path) == before


async def test_a_directory_at_the_path_is_refused(open_store: OpenStore, db_path: Path) -> None:
    """A folder where the file should be gets a message, not SQLite's "unable to open"."""
    db_path.mkdir(parents=True)
    with pytest.raises(StoreError, match="is a directory"):
        await open_store()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
async def test_an_unreadable_file_is_refused(open_store: OpenStore, db_path: Path) -> None:
    """No permission to read: the message says so."""
    await build_database(db_path, LEGACY_VERSION)
    db_path.chmod(0)
    try:
        with pytest.raises(StoreError, match="Cannot read"):
            await open_store()
    finally:
        db_path.chmod(0o600)


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute(sys.argv[2])
db.execute("BEGIN EXCLUSIVE")
db.execute("INSERT INTO user_settings VALUES (7, 'top_k', '1')")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
async def lock_holder(db_path: Path) -> AsyncIterator:
    """Starts another process that holds the database's write lock until the test ends."""
    processes: list[asyncio.subprocess.Process] = []

    async def hold(pragma: str) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLD_LOCK, str(db_path), pragma, stdout=asyncio.subprocess.PIPE
        )
        processes.append(process)
        assert await asyncio.wait_for(process.stdout.readline(), 20) == b"locked\n"

    yield hold
    for process in processes:
        process.kill()
        await process.wait()


@pytest.mark.parametrize("pragma", ["PRAGMA journal_mode = WAL", "PRAGMA locking_mode = EXCLUSIVE"])
async def test_a_database_locked_by_another_process_is_refused_at_start_up(
    open_store: OpenStore, db_path: Path, lock_holder, pragma: str
) -> None:
    """Another writer holding the file: a clear message at start-up, and its data left alone."""
    await build_database(db_path, LEGACY_VERSION)
    await lock_holder(pragma)
    with pytest.raises(StoreError, match="locked by another process"):
        await open_store(busy_timeout_s=0.2)
