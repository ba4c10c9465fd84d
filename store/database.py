"""One database under the store: its transactions and reads, their time, and its failures turned
into messages for the user.

The store's queries are plain functions of an SQLAlchemy `Connection`, the same for both
databases; a `Database` runs them. `write` runs one inside a transaction (committed before it
returns, rolled back on any error) and `read` inside a read-only one, on connections of their
own, so a write waiting for another process's lock never holds a read up. SQLite
(`SqliteDatabase`) runs each in a thread of its own, PostgreSQL (`PostgresDatabase`) on asyncpg
through SQLAlchemy's asyncio layer.

Each operation of the store (a method decorated with `operation`) is timed in
`taleweaver_database_seconds`, and bounded: a database that is busy, hung or gone is answered
with a `StoreUnavailableError` (its message says nothing was changed) rather than a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import postgresql, sqlite

from core.errors import SettingsError
from core.metrics import DATABASE_SECONDS
from store.errors import StoreBusyError, StoreCorruptError, StoreUnavailableError, unreachable

log = logging.getLogger(__name__)

SHUTTING_DOWN = "Preferences are unavailable: the bot is shutting down. Nothing was changed."

T = TypeVar("T")
P = ParamSpec("P")
Work = Callable[Concatenate[sa.Connection, P], T]
"""A query of the store: a function of a connection (inside its transaction) and its arguments."""


class OnDatabase(Protocol):
    database: Database


S = TypeVar("S", bound=OnDatabase)


def operation(
    name: str,
) -> Callable[[Callable[Concatenate[S, P], Awaitable[T]]], Callable[Concatenate[S, P], Awaitable[T]]]:
    """A store method that runs through its database's `run` as the operation `name`."""

    def decorate(method: Callable[Concatenate[S, P], Awaitable[T]]) -> Callable[Concatenate[S, P], Awaitable[T]]:
        @functools.wraps(method)
        async def bounded(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
            return await self.database.run(name, method(self, *args, **kwargs))

        return bounded

    return decorate


class Database(ABC):
    """What the store needs of a database; the two kinds differ in how they run a query."""

    dialect: str
    """`sqlite` or `postgresql`: the few statements that differ (upserts) are chosen by it."""

    def __init__(self, where: str) -> None:
        self.where = where
        """The file or the URL (without a password) for the owner's logs; never shown to users."""
        self._closed = False
        self._reported_damage = False

    @abstractmethod
    async def write(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work` in one write transaction: committed when it returns, rolled back when it raises."""

    @abstractmethod
    async def read(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work` in one read-only transaction on committed data."""

    @abstractmethod
    async def _dispose(self) -> None:
        """Close every connection."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> StoreUnavailableError | None:
        """The user-facing error for a failure of the database or its driver; None: a bug."""

    async def _bound(self, work: Coroutine[Any, Any, T]) -> T:
        """The operation's answer; a database with a deadline answers by it."""
        return await work

    def upsert(self, table: sa.Table, update: Iterable[str]) -> sa.Insert:
        """INSERT … ON CONFLICT (primary key) DO UPDATE: one statement, spelled by each dialect's module."""
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(table)
        keys = [column.name for column in table.primary_key.columns]
        return insert.on_conflict_do_update(index_elements=keys, set_={name: insert.excluded[name] for name in update})

    async def ping(self) -> bool:
        """A trivial read: True while the database answers (the readiness check)."""
        try:
            await self.run("ping", self.read(_select_one))
        except StoreUnavailableError:
            return False
        return True

    async def close(self) -> None:
        """Refuse new operations, then close every connection."""
        if not self._closed:
            self._closed = True
            await self._dispose()

    async def run(self, operation: str, work: Coroutine[Any, Any, T]) -> T:
        """One operation of the store (its transactions and reads inside): timed, bounded, and a
        failure of the database turned into a `StoreUnavailableError`."""
        if self._closed:
            work.close()
            raise StoreUnavailableError(SHUTTING_DOWN)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._bound(work)
            outcome = "ok"
            return result
        except SettingsError:
            outcome = "refused"
            raise
        except StoreUnavailableError as exc:
            outcome = "busy" if isinstance(exc, StoreBusyError) else "unavailable"
            raise
        except (sqlalchemy.exc.SQLAlchemyError, OSError, TimeoutError) as exc:
            error = self._unavailable(exc)
            if error is None:
                raise
            outcome = "busy" if isinstance(error, StoreBusyError) else "unavailable"
            raise error from exc
        finally:
            DATABASE_SECONDS.labels(operation=operation, outcome=outcome).observe(time.perf_counter() - started)

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError | None:
        if isinstance(exc, sqlalchemy.exc.TimeoutError):
            return StoreBusyError()  # every connection stayed in use past the pool's timeout
        if self._closed:
            return StoreUnavailableError(SHUTTING_DOWN)
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return unreachable()  # SQLAlchemy saw the connection drop; the pool has dropped it too
        error = self._classify(exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc)
        if error is None:
            return None
        if isinstance(error, StoreCorruptError) and not self._reported_damage:
            self._reported_damage = True
            log.error(
                "the database %s is damaged (%s); /story goes on with the defaults. Stop the bot and restore "
                "it from a backup.",
                self.where,
                exc,
            )
        elif not isinstance(error, StoreBusyError):
            log.warning("the database %s failed: %s", self.where, exc)
        return error


@contextlib.asynccontextmanager
async def turn(lock: asyncio.Lock, wait_s: float) -> AsyncIterator[None]:
    """Hold `lock` after those queued before (asyncio's locks are first come, first served),
    waiting at most `wait_s`: a queue behind something slow is answered "busy", not left waiting."""
    try:
        async with asyncio.timeout(wait_s):
            await lock.acquire()
    except TimeoutError:
        raise StoreBusyError() from None
    try:
        yield
    finally:
        lock.release()


def _select_one(connection: sa.Connection) -> None:
    connection.exec_driver_sql("SELECT 1")
