"""The store on one SQLite file: the embedded default, for a bot on one machine.

The queries are the shared ones (store/preferences.py, store/stories.py); this module opens the
file and runs them. Two connections, each with a thread of its own that runs a whole transaction
at a time: a writer, and a read-only reader (WAL: reads see committed data and are not held up
by a write that waits for another process's lock).

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

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from core.settings import DecodingSettings
from store import migrations
from store.database import Database, P, Work, turn
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

T = TypeVar("T")


class SqliteDatabase(Database):
    """An SQLite file: two sync engines of one connection each, a writer and a read-only reader,
    each used by a thread of its own, so that a whole transaction runs in one hop off the event loop."""

    dialect = "sqlite"

    def __init__(self, path: Path, busy_ms: int) -> None:
        super().__init__(str(path))
        self.writer = _engine(path, busy_ms, writer=True)
        self.reader = _engine(path, busy_ms, writer=False)
        self._threads = {
            engine: ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{role}")
            for engine, role in ((self.writer, "writer"), (self.reader, "reader"))
        }
        self._turns = {self.writer: asyncio.Lock(), self.reader: asyncio.Lock()}

    async def write(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._in_thread(
            self.writer, functools.partial(_in_transaction, self.writer, work, *args, **kwargs)
        )

    async def read(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._in_thread(
            self.reader, functools.partial(_in_transaction, self.reader, work, *args, **kwargs)
        )

    async def start(self, path: Path, busy_timeout_s: float, busy_ms: int) -> None:
        """Check the file, migrate it (the writer's thread), and prove the reader can read it."""
        await self._in_thread(self.writer, functools.partial(_prepare, self.writer, path, busy_timeout_s, busy_ms))
        await self.read(_count_schema)

    async def _in_thread(self, engine: sa.Engine, call: Callable[[], T]) -> T:
        """`call` in the engine's thread, after the operations queued before it (at most LOCK_WAIT_S)."""
        async with turn(self._turns[engine], LOCK_WAIT_S):
            return await asyncio.get_running_loop().run_in_executor(self._threads[engine], call)

    async def _dispose(self) -> None:
        loop = asyncio.get_running_loop()
        for engine, thread in self._threads.items():
            async with self._turns[engine]:  # after the operation running now
                await loop.run_in_executor(thread, engine.dispose)
            thread.shutdown()

    def _classify(self, exc: BaseException) -> StoreUnavailableError | None:
        return unavailable(exc) if isinstance(exc, sqlite3.Error) else None


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
        database = SqliteDatabase(path, busy_ms)
        try:
            await database.start(path, busy_timeout_s, busy_ms)
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


def _engine(path: Path, busy_ms: int, *, writer: bool) -> sa.Engine:
    """One connection, used by one thread at a time (the engine's own)."""
    engine = sa.create_engine(
        f"sqlite:///{path}",
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection: sqlite3.Connection, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        dbapi_connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
        dbapi_connection.execute("PRAGMA synchronous = FULL" if writer else "PRAGMA query_only = ON")

    @event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        # A writer takes the write lock at once: a write never fails halfway for want of it;
        # a reader's transaction holds one snapshot for all its statements (WAL).
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def _in_transaction(engine: sa.Engine, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    with engine.begin() as connection:
        return work(connection, *args, **kwargs)


def _count_schema(connection: sa.Connection) -> int:
    return connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one()


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


def _prepare(engine: sa.Engine, path: Path, busy_timeout_s: float, busy_ms: int) -> None:
    """Check ownership, then (and only then) check integrity, switch to WAL and migrate, waiting up
    to `busy_timeout_s` for another process (a second bot migrating the same file)."""
    with engine.connect() as connection:
        db: sqlite3.Connection = connection.connection.driver_connection
        db.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        version = _schema_version(db, path)
        if version:
            _check_integrity(db, path)  # before WAL or a migration writes to it
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise StoreError(f"{path} cannot be switched to WAL mode (it stays in {mode!r} mode).")
        with connection.begin():  # BEGIN IMMEDIATE: the write lock, held from the version check on
            migrations.upgrade(connection, str(path))
        db.execute(f"PRAGMA busy_timeout = {busy_ms}")


def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    """The schema version of an open file, after checking that it is ours (or empty).

    Raises `StoreError` for a foreign database or one written by a newer Taleweaver, before
    anything is written to it.
    """
    application_id = _pragma(db, "application_id")
    version = _pragma(db, "user_version")
    (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
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


def _pragma(db: sqlite3.Connection, name: str) -> int:
    (value,) = db.execute(f"PRAGMA {name}").fetchone()
    return int(value)


QUICK_CHECK_ERRORS_SHOWN = 3


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """`PRAGMA quick_check` reads every page: damage found now stops the bot with a message,
    instead of failing /settings and /story for everyone later."""
    rows = db.execute(f"PRAGMA quick_check({QUICK_CHECK_ERRORS_SHOWN})").fetchall()
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
