"""One database behind SQLAlchemy's async engines: its transactions and reads, their time, and
its failures turned into messages for the user.

Writes go through `transaction` (one transaction, committed before it returns, rolled back on
any error) and reads through `read` (one transaction on committed data). SQLite hands in two
engines of one connection each (a writer, and a reader that a writer waiting for another
process's lock never holds up); PostgreSQL one pooled engine for both. Every operation is timed
in `taleweaver_database_seconds`, and bounded: a database that is busy, hung or gone is answered
with a `StoreUnavailableError` (its message says nothing was changed) rather than a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.errors import SettingsError
from core.metrics import DATABASE_SECONDS
from store.errors import StoreBusyError, StoreCorruptError, StoreUnavailableError

log = logging.getLogger(__name__)

Classify = Callable[[BaseException], StoreUnavailableError | None]
"""The user-facing error for a failure of the database (or its driver); None: not the database's, a bug."""

SHUTTING_DOWN = "Preferences are unavailable: the bot is shutting down. Nothing was changed."


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
    async def transaction(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        async with self._bounded(operation), self.writer.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def read(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction on committed data (rolled back at the end: it wrote nothing)."""
        async with self._bounded(operation), self.reader.connect() as connection:
            yield connection

    async def ping(self) -> bool:
        """A trivial read: True while the database answers."""
        try:
            async with self.read("ping") as connection:
                await connection.exec_driver_sql("SELECT 1")
        except StoreUnavailableError:
            return False
        return True

    async def close(self) -> None:
        """Refuse new operations, then close every connection (waiting for those in use)."""
        if self._closed:
            return
        self._closed = True
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    @contextlib.asynccontextmanager
    async def _bounded(self, operation: str) -> AsyncIterator[None]:
        if self._closed:
            raise StoreUnavailableError(SHUTTING_DOWN)
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(self._deadline_s):
                yield
            outcome = "ok"
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
