"""The preferences store on one SQLite file, through one aiosqlite connection.

One connection and one lock: every operation runs alone, so a read never sees another task's
half-done write and concurrent updates cannot interleave. Each write is one `BEGIN IMMEDIATE` …
`COMMIT` transaction, committed (WAL, `synchronous=FULL`) before the call returns: a write the
user was told about survives a crash, and a crash mid-write leaves the old values or the new
ones, never a mix. Settings writes are rare, so the fsync per commit costs nothing that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiosqlite

from core.errors import SettingsError
from core.settings import FIELDS, DecodingSettings, coerce_field
from store import migrations
from store.errors import (
    SQLITE_BUSY,
    SQLITE_CANTOPEN,
    SQLITE_CORRUPT,
    SQLITE_LOCKED,
    SQLITE_NOTADB,
    SQLITE_READONLY,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    primary_code,
    unavailable,
)
from store.interface import Scope
from store.resolve import LIMIT_FIELDS, ResolvedSettings, resolve_settings
from store.stories import SqliteStoryStore
from store.validation import check_values

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
RUNTIME_BUSY_TIMEOUT_S = 2.0
"""How long a write waits at run time for another process's lock before it is refused as busy:
with the wait for this store's own lock, an answer comes well within Discord's limits."""
LOCK_WAIT_S = 4.0
"""How long an operation waits for this store's own lock (held by operations queued before it)."""
_MAX_ID = 2**63 - 1
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MISSING = object()


@dataclass(frozen=True)
class _Table:
    """SQL of one layer. Names are constants of this module; values are always bound parameters."""

    name: str
    owner: str

    @property
    def select(self) -> str:
        return f"SELECT field, value FROM {self.name} WHERE {self.owner} = ?"

    @property
    def upsert(self) -> str:
        return (
            f"INSERT INTO {self.name} ({self.owner}, field, value) VALUES (?, ?, ?) "
            f"ON CONFLICT ({self.owner}, field) DO UPDATE SET value = excluded.value"
        )

    @property
    def delete(self) -> str:
        return f"DELETE FROM {self.name} WHERE {self.owner} = ? AND field = ?"


_TABLES: dict[Scope, _Table] = {
    Scope.USER: _Table("user_settings", "user_id"),
    Scope.SERVER: _Table("guild_settings", "guild_id"),
    Scope.SERVER_LIMIT: _Table("guild_limits", "guild_id"),
}
_SELECT_LAYERS = (
    "SELECT 'user', field, value FROM user_settings WHERE user_id = ? "
    "UNION ALL SELECT 'server', field, value FROM guild_settings WHERE guild_id = ? "
    "UNION ALL SELECT 'server limit', field, value FROM guild_limits WHERE guild_id = ?"
)


class SqlitePreferencesStore:
    """`PreferencesStore` on SQLite. Create it with `open`, which checks and migrates the file."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        *,
        config_defaults: DecodingSettings,
        max_new_tokens_cap: int,
        reader: aiosqlite.Connection | None = None,
    ) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._reader = reader or db
        """Reads go through their own connection (WAL: they see committed data only, and are not
        held up by a write that waits for another process's lock)."""
        self._read_lock = asyncio.Lock() if reader is not None else self._lock
        self._closed = False
        self._reported_damage = False
        self.path = path
        self.config_defaults = config_defaults
        self.max_new_tokens_cap = max_new_tokens_cap
        self.stories = SqliteStoryStore(self._transaction, self._read)
        """Stories live in the same file, behind the same locks (store/stories.py)."""

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

        A file that is unreadable, locked by another process, read-only, not SQLite, another
        program's SQLite or a newer Taleweaver's is left exactly as it was.
        """
        path = Path(path)
        _check_file(path)
        try:
            db = await aiosqlite.connect(path, timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise _startup_error(path, exc) from exc
        reader: aiosqlite.Connection | None = None
        try:
            await _prepare(db, path)
            busy_ms = round(min(busy_timeout_s, runtime_busy_timeout_s) * 1000)
            await db.execute(f"PRAGMA busy_timeout = {busy_ms}")
            reader = await aiosqlite.connect(path, timeout=busy_timeout_s, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout = {busy_ms}")
            await reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            await _close_all(db, reader)
            raise _startup_error(path, exc) from exc
        except BaseException:
            await _close_all(db, reader)
            raise
        return cls(db, path, config_defaults=config_defaults, max_new_tokens_cap=max_new_tokens_cap, reader=reader)

    async def ping(self) -> bool:
        """A trivial read: True while the file is open and readable."""
        if self._closed:
            return False
        try:
            await self._read("SELECT 1", ())
        except StoreUnavailableError:
            return False
        return True

    async def close(self) -> None:
        async with self._lock, self._read_lock if self._read_lock is not self._lock else contextlib.nullcontext():
            if not self._closed:
                self._closed = True
                await _close_all(self._db, self._reader if self._reader is not self._db else None)

    async def resolve(
        self, user_id: int, guild_id: int | None, overrides: Mapping[str, Any] = _EMPTY
    ) -> ResolvedSettings:
        _check_id(user_id)
        if guild_id is not None:
            _check_id(guild_id)
        rows = await self._read(_SELECT_LAYERS, (user_id, guild_id, guild_id))
        layers = _split_layers(rows)
        return resolve_settings(
            config_defaults=self.config_defaults,
            max_new_tokens_cap=self.max_new_tokens_cap,
            server=layers[Scope.SERVER],
            user=layers[Scope.USER],
            command=overrides,
            server_limits=layers[Scope.SERVER_LIMIT],
        )

    async def resolve_server(self, guild_id: int) -> ResolvedSettings:
        _check_id(guild_id)
        layers = _split_layers(await self._read(_SELECT_LAYERS, (None, guild_id, guild_id)))
        return resolve_settings(
            config_defaults=self.config_defaults,
            max_new_tokens_cap=self.max_new_tokens_cap,
            server=layers[Scope.SERVER],
            server_limits=layers[Scope.SERVER_LIMIT],
        )

    async def get(self, scope: Scope, owner_id: int) -> dict[str, Any]:
        _check_id(owner_id)
        rows = await self._read(_TABLES[scope].select, (owner_id,))
        return _decode(scope, rows)

    async def set(self, scope: Scope, owner_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        _check_id(owner_id)
        table = _TABLES[scope]
        async with self._transaction() as db:
            server_limits: dict[str, Any] = {}
            if scope is Scope.SERVER:
                rows = await db.execute_fetchall(_TABLES[Scope.SERVER_LIMIT].select, (owner_id,))
                server_limits = _decode(Scope.SERVER_LIMIT, rows)
            checked = check_values(
                scope, values, max_new_tokens_cap=self.max_new_tokens_cap, server_limits=server_limits
            )
            await db.executemany(table.upsert, [(owner_id, name, json.dumps(v)) for name, v in checked.items()])
            # Read back before committing: a damaged page can take a write and fail every read of it,
            # and a write is acknowledged only if it can be read.
            stored = _decode(scope, await db.execute_fetchall(table.select, (owner_id,)))
            if any(stored.get(name, _MISSING) != value for name, value in checked.items()):
                raise sqlite3.DatabaseError("a written value did not read back")
        return checked

    async def reset(self, scope: Scope, owner_id: int, fields: Collection[str] | None = None) -> tuple[str, ...]:
        _check_id(owner_id)
        table = _TABLES[scope]
        if fields is not None:
            for name in fields:
                if name not in FIELDS:
                    coerce_field(name, None)  # raises the "no such setting" error
        async with self._transaction() as db:
            present = {name for name, _ in await db.execute_fetchall(table.select, (owner_id,))}
            removed = present if fields is None else present.intersection(fields)
            await db.executemany(table.delete, [(owner_id, name) for name in removed])
        return tuple(name for name in FIELDS if name in removed)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, alone on the connection; rolled back on any error."""
        async with self._locked():
            self._check_open()
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                await self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise self._unavailable(exc) from exc
            except BaseException:
                await self._rollback()
                raise

    @contextlib.asynccontextmanager
    async def _locked(self, lock: asyncio.Lock | None = None) -> AsyncIterator[None]:
        """One of this store's locks, waited for at most LOCK_WAIT_S: a queue behind a slow
        operation (a database locked by another process) is answered "busy" rather than left waiting."""
        lock = lock or self._lock
        try:
            await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
        except TimeoutError:
            raise StoreBusyError() from None
        try:
            yield
        finally:
            lock.release()

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> Iterable[sqlite3.Row]:
        async with self._locked(self._read_lock):
            self._check_open()
            try:
                return await self._reader.execute_fetchall(sql, parameters)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    async def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
        except sqlite3.Error:
            # SQLite rolls back by itself after some errors (a full disk, an I/O error).
            log.warning("rollback of a failed preferences write failed", exc_info=True)

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailableError:
        error = unavailable(exc)
        if isinstance(error, StoreCorruptError) and not self._reported_damage:
            self._reported_damage = True
            log.error(
                "the preferences database %s is damaged (%s); /story goes on with the defaults. Stop the bot "
                "and restore the file from a backup.",
                self.path,
                exc,
            )
        return error

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("Preferences are unavailable: the bot is shutting down. Nothing was changed.")


async def _close_all(*connections: aiosqlite.Connection | None) -> None:
    for connection in connections:
        if connection is not None:
            await connection.close()


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
    """Check ownership, then (and only then) switch to WAL, migrate and prove we can write."""
    version = await migrations.schema_version(db, path)
    if version:
        await _check_integrity(db, path)  # before WAL or a migration writes to it
    (mode,) = next(iter(await db.execute_fetchall("PRAGMA journal_mode = WAL")))
    if str(mode).lower() != "wal":
        raise StoreError(f"{path} cannot be switched to WAL mode (it stays in {mode!r} mode).")
    await db.execute("PRAGMA synchronous = FULL")
    await migrations.migrate(db, version)
    await db.execute("BEGIN IMMEDIATE")  # fails now, not at the first /settings, if another writer holds it
    await db.execute("ROLLBACK")


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


def _check_id(owner_id: int) -> None:
    """Discord ids are positive 64-bit ints; anything else here is a bug, not a user's mistake."""
    if isinstance(owner_id, bool) or not isinstance(owner_id, int) or not 0 < owner_id <= _MAX_ID:
        raise ValueError(f"not a Discord id: {owner_id!r}")


def _split_layers(rows: Iterable[sqlite3.Row]) -> dict[Scope, dict[str, Any]]:
    grouped: dict[Scope, list[tuple[str, str]]] = {scope: [] for scope in Scope}
    for scope, name, value in rows:
        grouped[Scope(scope)].append((name, value))
    return {scope: _decode(scope, layer) for scope, layer in grouped.items()}


def _decode(scope: Scope, rows: Iterable[Any]) -> dict[str, Any]:
    """Stored values, checked again: a range narrowed by a later version drops the value, with a log line."""
    values: dict[str, Any] = {}
    for name, text in rows:
        try:
            if scope is Scope.SERVER_LIMIT and name not in LIMIT_FIELDS:
                raise SettingsError(name, "cannot be limited")
            values[name] = coerce_field(name, json.loads(text))
        except (SettingsError, ValueError) as exc:
            log.warning("ignoring a stored %s value of %s: %s", scope.value, name, exc)
    return values
