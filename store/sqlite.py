"""The store on one SQLite file: the embedded default, for a bot on one machine.

The queries are the shared ones (store/preferences.py, store/stories.py); this module opens the
file. Two connections, each alone in its engine's pool: a writer, and a read-only reader (WAL:
reads see committed data and are not held up by a write that waits for another process's lock).
Each write is one `BEGIN IMMEDIATE` … `COMMIT` transaction, committed (`synchronous=FULL`)
before the call returns: a write the user was told about survives a crash, and a crash mid-write
leaves the old values or the new ones, never a mix. Settings writes are rare, so the fsync per
commit costs nothing that matters. A write waits at most RUNTIME_BUSY_TIMEOUT_S for another
process's lock and LOCK_WAIT_S for the connection (operations queued before it), then is
answered "busy".

A file that is unreadable, locked by another process, read-only, not SQLite, another program's
SQLite, damaged, or a newer Taleweaver's is refused at start-up and left exactly as it was.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from core.settings import DecodingSettings
from store import migrations
from store.database import Database
from store.errors import (
    SQLITE_BUSY,
    SQLITE_CANTOPEN,
    SQLITE_CORRUPT,
    SQLITE_LOCKED,
    SQLITE_NOTADB,
    SQLITE_READONLY,
    StoreError,
    StoreUnavailableError,
    primary_code,
    unavailable,
)
from store.preferences import SqlPreferencesStore

SQLITE_MAGIC = b"SQLite format 3\x00"
RUNTIME_BUSY_TIMEOUT_S = 2.0
"""How long a write waits at run time for another process's lock before it is refused as busy:
with the wait for this store's own connection, an answer comes well within Discord's limits."""
LOCK_WAIT_S = 4.0
"""How long an operation waits for this store's connection (held by operations queued before it)."""


class SqlitePreferencesStore(SqlPreferencesStore):
    """`PreferencesStore` on SQLite. Create it with `open`, which checks and migrates the file."""

    def __init__(
        self, database: Database, path: Path, *, config_defaults: DecodingSettings, max_new_tokens_cap: int
    ) -> None:
        super().__init__(database, config_defaults=config_defaults, max_new_tokens_cap=max_new_tokens_cap)
        self.path = path

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        config_defaults: DecodingSettings,
        max_new_tokens_cap: int,
        busy_timeout_s: float = 5.0,
        runtime_busy_timeout_s: float = RUNTIME_BUSY_TIMEOUT_S,
    ) -> SqlitePreferencesStore:
        """Open (or create) the database, refusing with `StoreError` anything that is not ours.

        `busy_timeout_s` is how long start-up waits for another process's lock (a second bot
        migrating the same file); at run time the shorter of it and `runtime_busy_timeout_s`.
        """
        path = Path(path)
        _check_file(path)
        busy_ms = round(min(busy_timeout_s, runtime_busy_timeout_s) * 1000)
        database = Database(
            _engine(path, busy_ms, writer=True), _classify, where=str(path), reader=_engine(path, busy_ms, writer=False)
        )
        try:
            async with database.writer.connect() as connection:
                driver = await _driver(connection)
                await driver.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
                await _prepare(driver, path)
                async with connection.begin():  # BEGIN IMMEDIATE: the write lock, held from the version check on
                    await connection.run_sync(migrations.upgrade, str(path))
                await driver.execute(f"PRAGMA busy_timeout = {busy_ms}")
            async with database.reader.connect() as connection:
                await connection.exec_driver_sql("SELECT count(*) FROM sqlite_master")
        except sqlalchemy.exc.DBAPIError as exc:
            await database.close()
            raise _startup_error(path, exc.orig) from exc
        except sqlite3.Error as exc:
            await database.close()
            raise _startup_error(path, exc) from exc
        except BaseException:
            await database.close()
            raise
        return cls(database, path, config_defaults=config_defaults, max_new_tokens_cap=max_new_tokens_cap)


def _engine(path: Path, busy_ms: int, *, writer: bool) -> AsyncEngine:
    """One connection in a pool of one: operations take turns on it, waiting at most LOCK_WAIT_S."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}",
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=LOCK_WAIT_S,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def configure(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA synchronous = FULL" if writer else "PRAGMA query_only = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(connection: Any) -> None:
        # A writer takes the write lock at once: a write never fails halfway for want of it.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


async def _driver(connection: AsyncConnection) -> aiosqlite.Connection:
    """The aiosqlite connection under SQLAlchemy's: start-up reads the file's header marks on it,
    outside any transaction."""
    return (await connection.get_raw_connection()).driver_connection


def _classify(exc: BaseException) -> StoreUnavailableError | None:
    return unavailable(exc) if isinstance(exc, sqlite3.Error) else None


def _check_file(path: Path) -> None:
    """Refuse, before SQLite touches it, a path that cannot be our database."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory. Point `database.path` in config.yaml at a file.")
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the folder of {path}: {exc.strerror}.") from exc
        return
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"Cannot read {path}: {exc.strerror}. Check its permissions.") from exc
    if header and header != SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not a Taleweaver database (it is not an SQLite file). It was left "
            "untouched: point `database.path` in config.yaml at another file."
        )
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StoreError(
            f"{path} (or its folder) is read-only; Taleweaver needs to write preferences "
            "there. Fix the permissions or point `database.path` elsewhere."
        )


async def _prepare(db: aiosqlite.Connection, path: Path) -> None:
    """Check ownership, then (and only then) check integrity and switch to WAL."""
    version = await _schema_version(db, path)
    if version:
        await _check_integrity(db, path)  # before WAL or a migration writes to it
    (mode,) = next(iter(await db.execute_fetchall("PRAGMA journal_mode = WAL")))
    if str(mode).lower() != "wal":
        raise StoreError(f"{path} cannot be switched to WAL mode (it stays in {mode!r} mode).")


async def _schema_version(db: aiosqlite.Connection, path: Path) -> int:
    """The schema version of an open file, after checking that it is ours (or empty).

    Raises `StoreError` for a foreign database or one written by a newer Taleweaver, before
    anything is written to it.
    """
    application_id = await _pragma(db, "application_id")
    version = await _pragma(db, "user_version")
    (tables,) = next(iter(await db.execute_fetchall("SELECT count(*) FROM sqlite_master")))
    if application_id == 0 and version == 0 and tables == 0:
        return 0
    if application_id != migrations.APPLICATION_ID:
        raise StoreError(
            f"{path} is an SQLite database, but not a Taleweaver one. It was left untouched: "
            "point `database.path` in config.yaml at another file."
        )
    latest = migrations.latest_version()
    if version > latest:
        raise StoreError(
            f"{path} was written by a newer Taleweaver (schema {version}; this one knows up to "
            f"{latest}). It was left untouched: upgrade Taleweaver or use another file."
        )
    return version


async def _pragma(db: aiosqlite.Connection, name: str) -> int:
    (value,) = next(iter(await db.execute_fetchall(f"PRAGMA {name}")))
    return int(value)


QUICK_CHECK_ERRORS_SHOWN = 3


async def _check_integrity(db: aiosqlite.Connection, path: Path) -> None:
    """`PRAGMA quick_check` reads every page: damage found now stops the bot with a message,
    instead of failing /settings and /story for everyone later."""
    rows = await db.execute_fetchall(f"PRAGMA quick_check({QUICK_CHECK_ERRORS_SHOWN})")
    problems = [str(row[0]) for row in rows]
    if problems != ["ok"]:
        raise _damaged(path, "; ".join(problems))


def _damaged(path: Path, detail: str) -> StoreError:
    return StoreError(
        f"{path} is damaged: SQLite's integrity check failed ({detail[:300]}). It was left untouched: "
        "restore it from a backup, or move it away to start with empty preferences (`sqlite3 FILE .recover` "
        "may save what is left)."
    )


def _startup_error(path: Path, exc: sqlite3.Error) -> StoreError:
    code = primary_code(exc)
    if code == SQLITE_CORRUPT:
        return _damaged(path, str(exc))
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreError(
            f"{path} is locked by another process (another Taleweaver, or a tool holding it "
            "open). It was left untouched: stop that process and start again."
        )
    if code == SQLITE_NOTADB:
        return StoreError(
            f"{path} is not a Taleweaver database (SQLite cannot read it). It was left "
            "untouched: point `database.path` in config.yaml at another file."
        )
    if code == SQLITE_READONLY:
        return StoreError(f"{path} is read-only; Taleweaver needs to write preferences there.")
    if code == SQLITE_CANTOPEN:
        return StoreError(f"Cannot open {path}. Check that the file and its folder are readable and writable.")
    return StoreError(f"Cannot use {path} as the preferences database: {exc}.")
