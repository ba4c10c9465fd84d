"""Fixtures of the store tests: a real SQLite file in a temporary folder, or a fresh database on the
session's real PostgreSQL server (tests/pg_server.py); never a fake store.

Modules in `ON_BOTH_DATABASES` run every test on both; the others are about one database and
run on SQLite unless they ask for `database_kind` "postgresql" themselves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.settings import DecodingSettings
from store import SqlitePreferencesStore, schema
from store.postgres import PostgresPreferencesStore
from store.preferences import SqlPreferencesStore

CAP = 300
"""The bot-wide `limits.max_new_tokens` these tests run under (the shipped config's value)."""

ON_BOTH_DATABASES = {"test_store", "test_stories", "test_schema"}
SHARED_DATABASE = {"test_store", "test_stories"}
"""Modules whose tests need only empty tables: on PostgreSQL they share one migrated database,
emptied before each test (creating a database costs a second on a busy machine)."""

OpenStore = Callable[..., Awaitable[SqlPreferencesStore]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "database_kind" in metafunc.fixturenames and module in ON_BOTH_DATABASES:
        metafunc.parametrize("database_kind", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "taleweaver.db"


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest, database_kind: str) -> AsyncIterator[str | None]:
    """A database on the session's server (PostgreSQL tests only): a new, empty one dropped
    afterwards, or for `SHARED_DATABASE` modules the shared one with its tables emptied."""
    if database_kind != "postgresql":
        yield None
        return
    server = request.getfixturevalue("postgres_server")
    if request.module.__name__.rsplit(".", 1)[-1] in SHARED_DATABASE:
        url = request.getfixturevalue("shared_postgres_database")
        tables = ", ".join(schema.metadata.tables)  # none yet before the first store migrates the database
        empty = f"TRUNCATE {tables} RESTART IDENTITY"
        await server.run(url, f"DO $$ BEGIN IF to_regclass('stories') IS NOT NULL THEN {empty}; END IF; END $$")
        yield url
        return
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture(scope="session")
def shared_postgres_database(postgres_server) -> str:
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture
async def open_store(
    request: pytest.FixtureRequest, database_kind: str, db_path: Path, postgres_url: str | None
) -> AsyncIterator[OpenStore]:
    """Opens stores on this test's database (SQLite: `db_path` or another path) and closes whatever
    is still open at the end."""
    opened: list[SqlPreferencesStore] = []

    async def open_(
        path: Path = db_path,
        *,
        config_defaults: DecodingSettings | None = None,
        cap: int = CAP,
        busy_timeout_s: float = 5.0,
    ) -> SqlPreferencesStore:
        defaults = config_defaults or DecodingSettings()
        if postgres_url is None:
            store: SqlPreferencesStore = await SqlitePreferencesStore.open(
                path, config_defaults=defaults, max_new_tokens_cap=cap, busy_timeout_s=busy_timeout_s
            )
        else:
            server = request.getfixturevalue("postgres_server")
            store = await PostgresPreferencesStore.open(
                postgres_url, password=server.password, config_defaults=defaults, max_new_tokens_cap=cap
            )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> SqlPreferencesStore:
    return await open_store()


async def execute(store: SqlPreferencesStore, sql: str, **parameters: Any) -> list[tuple]:
    """Plain SQL beside the store, on its own database (as another program or an older version
    would write), committed; the rows it returns."""

    def run(connection: sa.Connection) -> list[tuple]:
        result = connection.execute(sa.text(sql), parameters)
        return [tuple(row) for row in result] if result.returns_rows else []

    return await store.database.write(run)


def sqlite_writer(store: SqlPreferencesStore) -> sqlite3.Connection:
    """The SQLite store's writing connection (its pool's only one), to inject faults SQLite can
    produce but a test cannot cause (a full disk, a remount read-only); only while the store is idle."""
    with store.database.writer.connect() as connection:
        return connection.connection.driver_connection
