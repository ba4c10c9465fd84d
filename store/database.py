"""One database behind SQLAlchemy's async engines: its transactions and reads, their time, and
its failures turned into messages for the user.

Writes go through `transaction` (one transaction, committed before it returns, rolled back on
any error) and reads through `read` (one read-only transaction on committed data), each on its
own engine: a write waiting for another process's lock never holds a read up. Each operation of
the store (a method decorated with `operation`) is timed in `taleweaver_database_seconds`, and
bounded: a database that is busy, hung or gone is answered with a `StoreUnavailableError` (its
message says nothing was changed) rather than a wait. With a deadline (PostgreSQL), the answer
comes at the deadline even while SQLAlchemy is still closing a hung connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.errors import SettingsError
from core.metrics import DATABASE_SECONDS
from store.errors import StoreBusyError, StoreCorruptError, StoreUnavailableError, outcome_unknown, unreachable

log = logging.getLogger(__name__)

Classify = Callable[[BaseException], StoreUnavailableError | None]
"""The user-facing error for a failure of the database (or its driver); None: not the database's, a bug."""

SHUTTING_DOWN = "Preferences are unavailable: the bot is shutting down. Nothing was changed."

T = TypeVar("T")
P = ParamSpec("P")


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


class Database:
    """The engines of one database and what the store needs of them."""

    def __init__(
        self,
        writer: AsyncEngine,
        classify: Classify,
        *,
        where: str,
        reader: AsyncEngine | None = None,
        deadline_s: float | None = None,
    ) -> None:
        self.writer = writer
        self.reader = reader or writer
        self.where = where
        """The file or the URL (without a password) for the owner's logs; never shown to users."""
        self._classify = classify
        self._deadline_s = deadline_s
        self._closed = False
        self._reported_damage = False
        self._committing: set[asyncio.Task | None] = set()
        """Tasks whose transaction is committing: a deadline then leaves the outcome unknown."""
        self._abandoned: set[asyncio.Task] = set()
        """Operations past their deadline, still being cancelled."""

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`: the few statements that differ (upserts) are chosen by it."""
        return self.writer.dialect.name

    def upsert(self, table: sa.Table, update: Iterable[str]) -> sa.Insert:
        """INSERT … ON CONFLICT (primary key) DO UPDATE: one statement, spelled by each dialect's module."""
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(table)
        keys = [column.name for column in table.primary_key.columns]
        return insert.on_conflict_do_update(index_elements=keys, set_={name: insert.excluded[name] for name in update})

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        task = asyncio.current_task()
        try:
            async with self.writer.begin() as connection:
                yield connection
                self._committing.add(task)
        except (sqlalchemy.exc.DBAPIError, OSError) as exc:
            lost = isinstance(exc, OSError) or exc.connection_invalidated
            if task in self._committing and lost:
                raise outcome_unknown() from exc
            raise
        finally:
            self._committing.discard(task)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction on committed data (rolled back at the end: it wrote nothing)."""
        async with self.reader.connect() as connection:
            yield connection

    async def ping(self) -> bool:
        """A trivial read: True while the database answers."""
        try:
            await self.run("ping", self._select_one())
        except StoreUnavailableError:
            return False
        return True

    async def _select_one(self) -> None:
        async with self.read() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        """Refuse new operations, then close every connection (waiting for those in use)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    async def run(self, operation: str, work: Coroutine[Any, Any, T]) -> T:
        """One operation of the store (its transactions and reads inside): timed, bounded by the
        deadline, and a failure of the database turned into a `StoreUnavailableError`."""
        if self._closed:
            work.close()
            raise StoreUnavailableError(SHUTTING_DOWN)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await (work if self._deadline_s is None else self._within_deadline(work))
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

    async def _within_deadline(self, work: Coroutine[Any, Any, T]) -> T:
        """The answer, or at the deadline an error while the work is cancelled in the background
        (a hung server's connection takes SQLAlchemy up to 2 s more to close)."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task}, timeout=self._deadline_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        committing = task in self._committing
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        log.warning("the database %s did not answer within %.1f s", self.where, self._deadline_s)
        raise outcome_unknown() if committing else unreachable()

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
