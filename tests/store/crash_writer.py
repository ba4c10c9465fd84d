"""Writes to the store forever, printing each write once `set` has returned (acknowledged).

Run by the kill -9 tests (test_crash.py on SQLite, test_postgres.py on PostgreSQL), which
SIGKILL it, or the server, at a random moment. Write number i sets three fields that all encode
i, so a half-applied write would show as fields that disagree. A failed write (the server gone)
is printed as `failed` and retried with the same i.

    python -m tests.store.crash_writer DB_PATH_OR_POSTGRESQL_URL FIRST_I

The PostgreSQL password comes from TALEWEAVER_DATABASE_PASSWORD, as the bot's does.
"""

from __future__ import annotations

import asyncio
import os
import sys

from core.settings import DecodingSettings
from store import Scope, SqlitePreferencesStore, StoreUnavailableError
from store.postgres import PostgresPreferencesStore

USER = 1001


def values_of(i: int) -> dict[str, int]:
    return {"seed": i, "top_k": i % 501, "no_repeat_ngram_size": i % 11}


async def main(target: str, first: int) -> None:
    common = {"config_defaults": DecodingSettings(), "max_new_tokens_cap": 300}
    if target.startswith("postgresql://"):
        password = os.environ["TALEWEAVER_DATABASE_PASSWORD"]
        store = await PostgresPreferencesStore.open(target, password=password, **common)
    else:
        store = await SqlitePreferencesStore.open(target, **common)
    print("open", flush=True)
    i = first
    while True:
        try:
            await store.set(Scope.USER, USER, values_of(i))
        except StoreUnavailableError:
            print("failed", flush=True)
            await asyncio.sleep(0.05)
            continue
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
