"""PostgreSQL's own failures on a real server: another process's lock, a hung server, a stopped one,
kill -9 of the writer and of the server, and start-up refusals. Each answer comes within
Discord's 3 seconds, says nothing was changed, and leaves nothing half-written."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from core.settings import DecodingSettings
from store import Scope, StoreBusyError, StoreError, StoreUnavailableError
from store.postgres import PostgresPreferencesStore
from tests.pg_server import PostgresServer, start_server, stop_server
from tests.store.conftest import CAP, OpenStore, execute
from tests.store.crash_writer import USER
from tests.store.test_busy import timed
from tests.store.test_crash import check_the_saved_write, run_writer_until_killed

ANSWER_BOUND_S = 3.0
"""Discord's deadline for a first answer: every failure must be told within it."""
ON_POSTGRESQL = pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own, for tests that stop, freeze or kill it."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
async def own_store(own_server: PostgresServer) -> AsyncIterator[tuple[PostgresServer, str, OpenStore]]:
    """A fresh database on `own_server`, its URL, and an opener that closes what it opened."""
    url = own_server.url(own_server.create_database())
    opened: list[PostgresPreferencesStore] = []

    async def open_(**options) -> PostgresPreferencesStore:
        store = await PostgresPreferencesStore.open(
            url, password=own_server.password, config_defaults=DecodingSettings(), max_new_tokens_cap=CAP, **options
        )
        opened.append(store)
        return store

    yield own_server, url, open_
    for store in opened:
        await store.close()


HOLD_LOCK = """
import asyncio, os, sys, asyncpg
async def main():
    db = await asyncpg.connect(sys.argv[1], password=os.environ["TALEWEAVER_DATABASE_PASSWORD"])
    async with db.transaction():
        await db.execute("LOCK TABLE user_settings IN EXCLUSIVE MODE")
        print("locked", flush=True)
        await asyncio.sleep(float(sys.argv[2]))
asyncio.run(main())
"""
HOLD_S = 12.0


@ON_POSTGRESQL
async def test_a_table_locked_by_another_process_gets_busy_answers_in_time_and_reads_go_on(
    open_store: OpenStore, postgres_url: str, postgres_server: PostgresServer
) -> None:
    """Ten writes and ten reads while another process holds a lock for 12 s: the writes are told
    "busy" within 3 s, the reads are answered (MVCC, their own pool), nothing is half-written."""
    store = await open_store()
    users = range(2001, 2011)
    for user in users:
        await store.set(Scope.USER, user, {"top_k": 7})
    env = os.environ | {"TALEWEAVER_DATABASE_PASSWORD": postgres_server.password}
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_LOCK, postgres_url, str(HOLD_S), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"locked\n"
        began = time.monotonic()
        outcomes = await asyncio.gather(
            *(timed(store.set(Scope.USER, user, {"top_k": 8, "temperature": 0.5})) for user in users),
            *(timed(store.resolve(user, None)) for user in users),
        )
        elapsed = time.monotonic() - began
        writes, reads = outcomes[: len(users)], outcomes[len(users) :]
        print(f"\nanswered in {elapsed:.1f} s, slowest {max(t for _, t in outcomes):.2f} s")
        assert all(isinstance(result, StoreBusyError) for result, _ in writes), writes
        assert not any(isinstance(result, Exception) for result, _ in reads), reads
        assert max(seconds for _, seconds in outcomes) < ANSWER_BOUND_S
        assert [await store.get(Scope.USER, user) for user in users] == [{"top_k": 7}] * len(users), "half-written"
    finally:
        holder.kill()
        await holder.wait()
    assert await store.set(Scope.USER, 2001, {"top_k": 8}) == {"top_k": 8}


@ON_POSTGRESQL
async def test_reads_run_in_read_only_transactions(store) -> None:
    """The reader pool cannot write, whatever a bug might ask of it."""

    def read_only(connection) -> str:
        return connection.exec_driver_sql("SHOW transaction_read_only").scalar_one()

    assert await store.database.read(read_only) == "on"


async def test_a_hung_server_is_answered_within_3_s_and_the_store_recovers(own_store) -> None:
    """SIGSTOP: connections stay open and nothing answers. Reads and writes fail in time with a
    message; once the server runs again, so does the store, and nothing was written meanwhile."""
    server, _, open_ = own_store
    store = await open_(pool_size=2)
    await store.set(Scope.USER, USER, {"top_k": 7})
    frozen = server.freeze()
    try:
        outcomes = await asyncio.gather(
            *(timed(store.set(Scope.USER, USER, {"top_k": 9})) for _ in range(3)),
            *(timed(store.resolve(USER, None)) for _ in range(3)),
            timed(store.ping()),
        )
    finally:
        server.thaw(frozen)
    print(f"\nslowest answer {max(t for _, t in outcomes):.2f} s")
    assert all(isinstance(result, StoreUnavailableError) for result, _ in outcomes[:-1]), outcomes
    assert all(result.message.endswith("Nothing was changed.") for result, _ in outcomes[:-1])
    assert outcomes[-1][0] is False  # /readyz: the database is not ready
    assert max(seconds for _, seconds in outcomes) < ANSWER_BOUND_S
    assert await store.get(Scope.USER, USER) == {"top_k": 7}
    assert await store.set(Scope.USER, USER, {"top_k": 8}) == {"top_k": 8}


async def test_a_stopped_server_is_answered_at_once_and_a_restart_is_picked_up(own_store) -> None:
    """The server stops (connections refused): a clear message at once, readiness false; it
    comes back: the pool reconnects by itself and the store serves again."""
    server, _, open_ = own_store
    store = await open_()
    await store.set(Scope.USER, USER, {"top_k": 7})
    server.stop()
    try:
        result, seconds = await timed(store.set(Scope.USER, USER, {"top_k": 9}))
        assert isinstance(result, StoreUnavailableError) and "could not be reached" in result.message
        assert seconds < ANSWER_BOUND_S
        assert not await store.ping()
    finally:
        server.start()
    assert await store.ping()
    assert await store.get(Scope.USER, USER) == {"top_k": 7}
    assert await store.set(Scope.USER, USER, {"top_k": 8}) == {"top_k": 8}


ROUNDS = 2


async def test_kill_9_of_the_writer_keeps_every_acknowledged_write_and_no_half_write(own_store) -> None:
    """The bot process SIGKILLed mid-writes: the last acknowledged write is there, whole (or the
    one in flight, whole), round after round."""
    server, url, open_ = own_store
    env = os.environ | {"TALEWEAVER_DATABASE_PASSWORD": server.password}
    rng = random.Random(29)
    first = 1
    for _ in range(ROUNDS):
        last_ack = await run_writer_until_killed(url, first, rng.randint(5, 60), env=env)
        first = await check_the_saved_write(await open_(), last_ack)


async def test_kill_9_of_the_server_loses_no_acknowledged_write(own_store) -> None:
    """The PostgreSQL server SIGKILLed mid-writes (postmaster and every backend), then started
    again (crash recovery from its WAL): every acknowledged write is there, none half-applied."""
    server, url, open_ = own_store
    env = os.environ | {"TALEWEAVER_DATABASE_PASSWORD": server.password}
    rng = random.Random(30)
    first = 1
    for _ in range(ROUNDS):
        try:
            last_ack = await run_writer_until_killed(url, first, rng.randint(5, 60), env=env, kill_server=server.kill)
        finally:
            server.start()
        first = await check_the_saved_write(await open_(), last_ack)
    assert "automatic recovery in progress" in server.log.read_text()


@ON_POSTGRESQL
async def test_a_wrong_password_is_refused_at_start_up_without_showing_it(postgres_url: str) -> None:
    wrong = "not-the-password-0451"
    with pytest.raises(StoreError, match="refused the login") as info:
        await PostgresPreferencesStore.open(
            postgres_url, password=wrong, config_defaults=DecodingSettings(), max_new_tokens_cap=CAP
        )
    assert "TALEWEAVER_DATABASE_PASSWORD" in info.value.message
    assert wrong not in info.value.message


async def test_no_server_at_the_address_is_refused_at_start_up_with_a_message() -> None:
    from tests.pg_server import free_port

    with pytest.raises(StoreError, match="Cannot reach PostgreSQL"):
        await PostgresPreferencesStore.open(
            f"postgresql://taleweaver@127.0.0.1:{free_port()}/taleweaver",
            password="x",
            config_defaults=DecodingSettings(),
            max_new_tokens_cap=CAP,
        )


async def test_a_missing_database_is_refused_at_start_up(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await PostgresPreferencesStore.open(
            postgres_server.url("no_such_database"),
            password=postgres_server.password,
            config_defaults=DecodingSettings(),
            max_new_tokens_cap=CAP,
        )


@ON_POSTGRESQL
async def test_a_database_with_our_table_names_but_not_our_version_is_left_untouched(
    open_store: OpenStore, store
) -> None:
    """Tables named like ours that Taleweaver did not make (no version table) are not migrated or written."""
    await store.set(Scope.USER, USER, {"top_k": 7})
    await execute(store, "DROP TABLE taleweaver_schema_version")
    with pytest.raises(StoreError, match="not made by Taleweaver"):
        await open_store()
    assert await execute(store, "SELECT count(*) FROM user_settings") == [(1,)]
