"""Migrations on SQLite and on PostgreSQL: the tables they make are the ones the queries use; an
older schema keeps its data; a failed migration leaves the old one whole; processes starting
together migrate once; a schema from a newer Taleweaver is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from store import StoreError, migrations, schema
from store.migrations import VERSION_TABLE
from store.postgres import database_url
from tests.store.conftest import OpenStore
from tests.store.test_migrations import ROWS_ADDED_IN, assert_data_of

ROOT = Path(__file__).resolve().parents[2]
BROKEN_REVISION = '''"""A migration that fails halfway.

Revision ID: {revision}
Revises: {previous}
"""

from alembic import op

revision = "{revision}"
down_revision = "{previous}"


def upgrade() -> None:
    op.execute("CREATE TABLE half_done (x INTEGER)")
    op.execute("THIS IS NOT SQL")
'''


@pytest.fixture
async def raw_engine(
    request: pytest.FixtureRequest, database_kind: str, db_path: Path, postgres_url: str | None
) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's database that is not the store's: what another program (or an
    older Taleweaver) would use."""
    if postgres_url is None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")
    else:
        engine = create_async_engine(database_url(postgres_url, request.getfixturevalue("postgres_server").password))
    yield engine
    await engine.dispose()


async def build_at(engine: AsyncEngine, version: int) -> None:
    """The database at schema `version` (through Alembic), with the rows each version up to it wrote."""
    async with engine.begin() as connection:
        await connection.run_sync(migrations.upgrade, "test database", f"{version:04d}")
        for added_in in range(1, version + 1):
            for sql, parameters in ROWS_ADDED_IN[added_in]:
                names = [f"p{i}" for i in range(len(parameters))]
                sql = sql.replace("?", "{}").format(*(f":{name}" for name in names))
                await connection.execute(sa.text(sql), dict(zip(names, parameters, strict=True)))


async def revision_of(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(migrations.current_revision)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def test_the_migrated_tables_are_the_ones_the_queries_describe(
    open_store: OpenStore, raw_engine: AsyncEngine
) -> None:
    """store/schema.py and the migrations agree: Alembic's comparison finds no difference."""
    await (await open_store()).close()
    async with raw_engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"version_table": VERSION_TABLE}), schema.metadata
            )
        )
    assert differences == []


@pytest.mark.parametrize("version", [1, 2])
async def test_a_database_at_an_older_revision_is_migrated_and_keeps_its_data(
    open_store: OpenStore, raw_engine: AsyncEngine, version: int
) -> None:
    await build_at(raw_engine, version)
    await assert_data_of(await open_store(), version)
    assert await revision_of(raw_engine) == f"{migrations.latest_version():04d}"


async def test_a_failed_migration_leaves_the_previous_version_and_data(
    open_store: OpenStore, raw_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails halfway is rolled back whole: the old version, no half-made table, the data."""
    latest = migrations.latest_version()
    await build_at(raw_engine, latest)
    scripts = tmp_path / "scripts"
    shutil.copytree(migrations.SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    broken = BROKEN_REVISION.format(revision=f"{latest + 1:04d}", previous=f"{latest:04d}")
    (scripts / "versions" / f"{latest + 1:04d}_broken.py").write_text(broken)
    monkeypatch.setattr(migrations, "SCRIPTS", scripts)

    with pytest.raises(StoreError):
        await open_store()

    assert await revision_of(raw_engine) == f"{latest:04d}"
    assert "half_done" not in await table_names(raw_engine)
    async with raw_engine.connect() as connection:
        assert (await connection.execute(sa.text("SELECT count(*) FROM user_settings"))).scalar_one() == 2


async def test_a_schema_from_a_newer_taleweaver_is_refused_and_left_as_it_was(
    open_store: OpenStore, raw_engine: AsyncEngine
) -> None:
    """A downgrade must not run an old bot on a schema it does not know."""
    await build_at(raw_engine, migrations.latest_version())
    async with raw_engine.begin() as connection:
        await connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    before = await table_names(raw_engine)
    with pytest.raises(StoreError, match="newer Taleweaver"):
        await open_store()
    assert await table_names(raw_engine) == before
    assert await revision_of(raw_engine) == "9999"


OPEN_AND_REPORT = """
import asyncio, logging, os, sys
from core.settings import DecodingSettings
from store.postgres import PostgresPreferencesStore
from store.sqlite import SqlitePreferencesStore

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stdout)

async def main(target):
    common = {"config_defaults": DecodingSettings(), "max_new_tokens_cap": 300}
    if target.startswith("postgresql://"):
        password = os.environ["TALEWEAVER_DATABASE_PASSWORD"]
        store = await PostgresPreferencesStore.open(target, password=password, **common)
    else:
        store = await SqlitePreferencesStore.open(target, busy_timeout_s=30, **common)
    await store.close()
    print("opened", flush=True)

asyncio.run(main(sys.argv[1]))
"""
PROCESSES = 3


async def test_processes_starting_together_migrate_the_database_once(
    request: pytest.FixtureRequest, database_kind: str, db_path: Path, postgres_url: str | None, raw_engine
) -> None:
    """Three bot processes open one empty database at once: all start, the migrations run once."""
    target = postgres_url or str(db_path)
    env = dict(os.environ)
    if postgres_url is not None:
        env["TALEWEAVER_DATABASE_PASSWORD"] = request.getfixturevalue("postgres_server").password
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", OPEN_AND_REPORT, target, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(PROCESSES)
    ]
    outputs = [(await asyncio.wait_for(process.communicate(), 120))[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * PROCESSES, outputs
    assert all(output.rstrip().endswith("opened") for output in outputs)
    migrated = [line for output in outputs for line in output.splitlines() if "database migrated" in line]
    assert len(migrated) == 1, outputs
    async with raw_engine.connect() as connection:
        versions = (await connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
    assert versions == [(f"{migrations.latest_version():04d}",)]
