"""Fixtures of the store tests: a real SQLite file in a temporary folder, never a fake store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.settings import DecodingSettings
from store import SqlitePreferencesStore

CAP = 300
"""The bot-wide `limits.max_new_tokens` these tests run under (the shipped config's value)."""

OpenStore = Callable[..., Awaitable[SqlitePreferencesStore]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "taleweaver.db"


@pytest.fixture
async def open_store(db_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores on `db_path` (or another path) and closes whatever is still open at the end."""
    opened: list[SqlitePreferencesStore] = []

    async def open_(
        path: Path = db_path,
        *,
        config_defaults: DecodingSettings | None = None,
        cap: int = CAP,
        busy_timeout_s: float = 5.0,
    ) -> SqlitePreferencesStore:
        store = await SqlitePreferencesStore.open(
            path,
            config_defaults=config_defaults or DecodingSettings(),
            max_new_tokens_cap=cap,
            busy_timeout_s=busy_timeout_s,
        )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> SqlitePreferencesStore:
    return await open_store()
