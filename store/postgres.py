"""The store on PostgreSQL: one database that every bot process shares, whichever shards it runs.

The queries are the shared ones (store/preferences.py, store/stories.py); this module opens the
database. Each process keeps two pools of `pool_size` connections (asyncpg): one for writes, and
one for read-only reads, which writes waiting for another process's lock never hold up (as on
SQLite). A connection that the server dropped (a restart) is replaced and the operation tried once
more, so a restart costs no command an error. Each write is one transaction committed before the
call returns (PostgreSQL's default `synchronous_commit`: on disk when acknowledged).

Bounds, so that a busy, hung or vanished server is answered within Discord's 3 seconds: a row or
table lock held by another process is waited for LOCK_TIMEOUT_MS, a statement runs at most
STATEMENT_TIMEOUT_MS, a free connection is waited for POOL_TIMEOUT_S, and the whole operation
(connecting included) gives up after DEADLINE_S; the transaction is rolled back in every case.
A connection waited for and then a lock or a statement waited for must still end well before the
deadline, on a loaded machine too, so that a busy database is told as "busy" (try again) rather
than as one that did not answer.

Migrations run at start-up in one transaction holding an advisory lock: processes starting
together take turns, and all but the first find nothing left to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.settings import DecodingSettings
from store import migrations, schema
from store.database import Database, P, Work
from store.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    disk_full,
    outcome_unknown,
    read_only,
    unreachable,
)
from store.preferences import SqlPreferencesStore

log = logging.getLogger(__name__)
T = TypeVar("T")

POOL_TIMEOUT_S = 0.75
LOCK_TIMEOUT_MS = 1000
STATEMENT_TIMEOUT_MS = 1500
CONNECT_TIMEOUT_S = 2.0
DEADLINE_S = 2.8
STARTUP_TIMEOUT_S = 60.0
"""Start-up waits longer: for the server to come up beside the bot, or another process's migration."""
MIGRATION_LOCK = 0x54616C65
"""The advisory lock key of migrations (b"Tale")."""

_BUSY = {
    "55P03": "lock_not_available",
    "57014": "query_canceled (statement_timeout)",
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
    "53300": "too_many_connections",
}
_UNREACHABLE_CLASSES = ("08", "28", "3D", "53", "57", "58")
"""Connection failures, refused logins, a dropped database, resources, shutdowns, system errors."""


class PostgresDatabase(Database):
    """A PostgreSQL database: a pool for writes and one for read-only reads, on asyncpg."""

    dialect = "postgresql"

    def __init__(self, address: URL, pool_size: int) -> None:
        super().__init__(address.render_as_string(hide_password=True))
        self.writer = _engine(address, pool_size)
        self.reader = _engine(address, pool_size, read_only=True)
        self._committing: set[asyncio.Task | None] = set()
        """Tasks whose transaction is committing: losing the server then leaves the outcome unknown."""
        self._abandoned: set[asyncio.Task] = set()
        """Operations past their deadline, still being cancelled."""

    async def write(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._again_on_a_new_connection(self._write_once, work, *args, **kwargs)

    async def read(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._again_on_a_new_connection(self._read_once, work, *args, **kwargs)

    async def _again_on_a_new_connection(
        self, once: Callable[..., Awaitable[T]], work: Work[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Pooled connections are not checked before use (a round trip each time): one that turns
        out dead (the server restarted) is dropped with the rest of the pool, and the operation runs
        once more on a new one. Safe: the server rolled back whatever it had begun, and a
        transaction lost while committing is never run again (`_write_once` says so instead)."""
        try:
            return await once(work, *args, **kwargs)
        except sqlalchemy.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return await once(work, *args, **kwargs)

    async def _write_once(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.current_task()
        try:
            async with self.writer.begin() as connection:
                result = await connection.run_sync(work, *args, **kwargs)
                self._committing.add(task)
        except (sqlalchemy.exc.DBAPIError, OSError) as exc:
            lost = isinstance(exc, OSError) or exc.connection_invalidated
            if task in self._committing and lost:
                raise outcome_unknown() from exc
            raise
        finally:
            self._committing.discard(task)
        return result

    async def _read_once(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with self.reader.connect() as connection:
            return await connection.run_sync(work, *args, **kwargs)

    async def _bound(self, work: Coroutine[Any, Any, T]) -> T:
        """The answer, or at DEADLINE_S an error while the work is cancelled in the background
        (SQLAlchemy takes up to 2 s more to close a hung server's connection)."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task}, timeout=DEADLINE_S)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        committing = task in self._committing
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        log.warning("the database %s did not answer within %.1f s", self.where, DEADLINE_S)
        raise outcome_unknown() if committing else unreachable()

    async def _dispose(self) -> None:
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        await self.writer.dispose()
        await self.reader.dispose()

    def _classify(self, exc: BaseException) -> StoreUnavailableError | None:
        return _classify(exc)


class PostgresPreferencesStore(SqlPreferencesStore):
    """`PreferencesStore` on PostgreSQL. Create it with `open`, which checks and migrates the database."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None,
        config_defaults: DecodingSettings,
        max_new_tokens_cap: int,
        pool_size: int = 5,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> PostgresPreferencesStore:
        """Connect, check the database is ours (or empty) and migrate it; `StoreError` says why not.

        `url` is `postgresql://user@host:port/database` (query options go to asyncpg, e.g.
        `?ssl=require`); `password` None leaves it to libpq's conventions (PGPASSWORD, ~/.pgpass).
        """
        database = PostgresDatabase(database_url(url, password), pool_size)
        where = database.where
        try:
            async with asyncio.timeout(startup_timeout_s), database.writer.begin() as connection:
                timeout_ms = round(startup_timeout_s * 1000)
                await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
                await connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                await connection.run_sync(_check_ours, where)
                await connection.run_sync(migrations.upgrade, where)
        except StoreError:
            await database.close()
            raise
        except TimeoutError as exc:
            await database.close()
            raise StoreError(
                f"PostgreSQL at {where} did not answer within {startup_timeout_s:g} s (a hung server, a firewall "
                "dropping packets, or another Taleweaver migrating it for that long)."
            ) from exc
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            await database.close()
            raise _startup_error(where, exc) from exc
        except BaseException:
            await database.close()
            raise
        return cls(database, config_defaults=config_defaults, max_new_tokens_cap=max_new_tokens_cap)


def database_url(url: str, password: str | None) -> URL:
    """The asyncpg URL of `database.url`, with the password from the environment (never from the file)."""
    address = make_url(url).set(drivername="postgresql+asyncpg")
    return address.set(password=password) if password else address


def _engine(address: URL, pool_size: int, *, read_only: bool = False) -> AsyncEngine:
    """Reads run without BEGIN … ROLLBACK (autocommit, each statement read-only on its own
    snapshot): two round trips fewer for each of them."""
    settings = {
        "application_name": "taleweaver",
        "lock_timeout": str(LOCK_TIMEOUT_MS),
        "statement_timeout": str(STATEMENT_TIMEOUT_MS),
        "idle_in_transaction_session_timeout": "30000",
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"
    return create_async_engine(
        address,
        isolation_level="AUTOCOMMIT" if read_only else "READ COMMITTED",
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        connect_args={"timeout": CONNECT_TIMEOUT_S, "server_settings": settings},
    )


def _check_ours(connection: sa.Connection, where: str) -> None:
    """A database with Taleweaver's tables but not its version table was not made by Taleweaver."""
    tables = set(sa.inspect(connection).get_table_names())
    if migrations.VERSION_TABLE not in tables and tables & set(schema.metadata.tables):
        raise StoreError(
            f"{where} has tables named like Taleweaver's ({', '.join(sorted(tables & set(schema.metadata.tables)))}) "
            "but no Taleweaver schema version: it was not made by Taleweaver and was left untouched. Point "
            "`database.url` at an empty database."
        )


def _classify(exc: BaseException) -> StoreUnavailableError | None:
    """The user-facing error for a failure at run time (the transaction is rolled back)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        # A dropped connection: refused or reset, no answer, or asyncpg's state machine left mid-operation.
        lost = (
            OSError,
            TimeoutError,
            AsyncAdapt_asyncpg_dbapi.InterfaceError,
            AsyncAdapt_asyncpg_dbapi.InternalClientError,
        )
        gone = isinstance(exc, lost)
        return unreachable() if gone else None
    if sqlstate in _BUSY:
        return StoreBusyError()
    if sqlstate == "53100":
        return disk_full()
    if sqlstate == "25006":
        return read_only()
    if sqlstate in ("XX001", "XX002"):
        return StoreCorruptError(
            "Preferences are unavailable right now: the preferences database could not be reached (it is "
            "damaged). Please tell the bot's owner. Nothing was changed."
        )
    return unreachable() if sqlstate[:2] in _UNREACHABLE_CLASSES else None


def _startup_error(where: str, exc: BaseException) -> StoreError:
    orig: Any = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in ("28P01", "28000"):
        return StoreError(
            f"PostgreSQL at {where} refused the login ({orig}). Check the user in `database.url` and the "
            "password in TALEWEAVER_DATABASE_PASSWORD."
        )
    if sqlstate == "3D000":
        return StoreError(f"PostgreSQL at {where}: the database does not exist ({orig}). Create it first.")
    if sqlstate == "42501":
        return StoreError(f"PostgreSQL at {where}: the user may not create Taleweaver's tables ({orig}).")
    if isinstance(orig, OSError):
        return StoreError(f"Cannot reach PostgreSQL at {where}: {orig}. Check `database.url` and that the server runs.")
    return StoreError(f"Cannot use PostgreSQL at {where} as the preferences database: {orig}.")
