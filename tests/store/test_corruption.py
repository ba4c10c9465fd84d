"""Issue 18, item 3: a database with damaged pages, on real files.

At start-up `PRAGMA quick_check` refuses it with a clear message and leaves it byte for byte as it
was (before the fix it was opened, then every /settings show and /story failed). When damage
appears while the bot runs, a write that cannot be read back is not acknowledged, and the server's
layers (on undamaged pages) can still be read for /story's fallback.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from core.settings import DecodingSettings
from store import Scope, SqlitePreferencesStore, StoreCorruptError, StoreError, StoreUnavailableError
from tests.store.conftest import CAP, OpenStore, sqlite_writer

PAGE = 4096
GUILD = 77
EVERY_FIELD = {"strategy": "sampling", "temperature": 0.8, "top_k": 40, "top_p": 0.9, "max_new_tokens": 60, "seed": 3}


async def fill(path: Path, users: int = 300) -> None:
    """A real preferences database: many users' settings and one server's, written by the store."""
    store = await SqlitePreferencesStore.open(path, config_defaults=DecodingSettings(), max_new_tokens_cap=CAP)
    try:
        for user in range(1, users + 1):
            await store.set(Scope.USER, user, EVERY_FIELD)
        await store.set(Scope.SERVER, GUILD, {"temperature": 0.6})
    finally:
        await store.close()


def scribble(path: Path, pages: list[int], seed: int = 18) -> None:
    """Overwrite whole pages (1-based) with random bytes, as `dd if=/dev/urandom … conv=notrunc` does."""
    rng = random.Random(seed)
    with path.open("r+b") as file:
        for page in pages:
            file.seek((page - 1) * PAGE)
            file.write(rng.randbytes(PAGE))


def root_pages(path: Path, table: str) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = ?", (table,))]


async def test_damaged_pages_are_refused_at_start_up_and_the_file_is_left_untouched(
    open_store: OpenStore, db_path: Path
) -> None:
    await fill(db_path)
    assert db_path.stat().st_size > 5 * PAGE
    scribble(db_path, [3, 4])  # dd … bs=4096 seek=2 count=2
    before = db_path.read_bytes()
    with pytest.raises(StoreError, match="is damaged: SQLite's integrity check failed") as info:
        await open_store()
    print(f"\n{info.value.message}")
    assert str(db_path) in info.value.message and "left untouched" in info.value.message
    assert db_path.read_bytes() == before


async def test_damage_that_appears_while_running_fails_the_users_layer_but_not_the_servers(
    open_store: OpenStore, db_path: Path
) -> None:
    await fill(db_path)
    store = await open_store()
    scribble(db_path, root_pages(db_path, "user_settings"))
    sqlite_writer(store).execute("PRAGMA shrink_memory")  # start-up's quick_check left every page in its cache
    with pytest.raises(StoreCorruptError):
        await store.resolve(5, GUILD)
    with pytest.raises(StoreUnavailableError):  # not acknowledged: it cannot be read back
        await store.set(Scope.USER, 5, {"temperature": 1.5})
    assert await store.get(Scope.SERVER, GUILD) == {"temperature": 0.6}
