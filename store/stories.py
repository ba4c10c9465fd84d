"""Stories kept in SQLite: who owns one, where it is, its opening and its parts (with drafts).

A story's parts form a tree: each part continues its parent (none: the opening), and parts
with the same parent are drafts of one another (Regenerate adds one). `shown_part_id` ends the
chain the story message shows. A part is written only once it is finished, in one transaction
with the move of `shown_part_id`, so a crash mid-part loses that part and nothing else.

The store shares the preferences store's connection and locks (one file, one writer): it is handed
that store's transaction and read calls, so it needs nothing else of it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite

from core.settings import DecodingSettings
from store.records import Part, Story

DAY_S = 24 * 60 * 60

Transaction = Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]
"""Opens one write transaction, alone on the connection, rolled back on any error."""
Read = Callable[[str, tuple[Any, ...]], Awaitable[Iterable[sqlite3.Row]]]
"""Runs one query on committed data."""


_STORY_COLUMNS = (
    "id, owner_id, guild_id, channel_id, message_id, thread_id, opening, settings, shown_part_id, updated_at"
)
_PART_COLUMNS = "id, parent_id, author_id, added, settings, seed, text, stop_reason"


class SqliteStoryStore:
    """`StoryStore` on the preferences database. Every write is one transaction; reads see committed data."""

    def __init__(self, transaction: Transaction, read: Read, clock: Callable[[], float] = time.time) -> None:
        self._transaction = transaction
        self._read = read
        self._clock = clock

    async def create(
        self, owner_id: int, guild_id: int | None, channel_id: int | None, opening: str, settings: DecodingSettings
    ) -> int:
        """A new story with no part yet; its id goes into the custom ids of its buttons."""
        now = self._clock()
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO stories (owner_id, guild_id, channel_id, opening, settings, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (owner_id, guild_id, channel_id, _storable(opening), _encode(settings), now, now),
            )
            return int(cursor.lastrowid)

    async def set_message(self, story_id: int, message_id: int) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE stories SET message_id = ? WHERE id = ?", (message_id, story_id))

    async def set_thread(self, story_id: int, thread_id: int) -> bool:
        """Tie a thread to the story; False when the story already has one (or is gone)."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE stories SET thread_id = ?, updated_at = ? WHERE id = ? AND thread_id IS NULL",
                (thread_id, self._clock(), story_id),
            )
            return cursor.rowcount == 1

    async def get(self, story_id: int) -> Story | None:
        rows = list(await self._read(f"SELECT {_STORY_COLUMNS} FROM stories WHERE id = ?", (story_id,)))
        return await self._assemble(rows[0]) if rows else None

    async def by_thread(self, thread_id: int) -> Story | None:
        rows = list(await self._read(f"SELECT {_STORY_COLUMNS} FROM stories WHERE thread_id = ?", (thread_id,)))
        return await self._assemble(rows[0]) if rows else None

    async def add_part(
        self,
        story_id: int,
        *,
        parent_id: int | None,
        author_id: int,
        added: str,
        settings: DecodingSettings,
        seed: int,
        text: str,
        stop_reason: str,
        precision: str = "",
    ) -> Part | None:
        """Save a finished part and show it; None when the story was deleted meanwhile."""
        encoded = _encode(settings, precision)
        async with self._transaction() as db:
            exists = list(await db.execute_fetchall("SELECT 1 FROM stories WHERE id = ?", (story_id,)))
            if not exists:
                return None
            cursor = await db.execute(
                "INSERT INTO story_parts (story_id, parent_id, author_id, added, settings, seed, text, stop_reason, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    story_id,
                    parent_id,
                    author_id,
                    _storable(added),
                    encoded,
                    seed,
                    _storable(text),
                    stop_reason,
                    self._clock(),
                ),
            )
            part_id = int(cursor.lastrowid)
            await db.execute(
                "UPDATE stories SET shown_part_id = ?, updated_at = ? WHERE id = ?", (part_id, self._clock(), story_id)
            )
        return Part(part_id, parent_id, author_id, added, settings, seed, text, stop_reason, precision)

    async def show(self, story_id: int, part_id: int) -> bool:
        """Show another draft (a part of this story); False when there is no such part."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE stories SET shown_part_id = ?, updated_at = ? WHERE id = ? AND EXISTS "
                "(SELECT 1 FROM story_parts WHERE id = ? AND story_id = ?)",
                (part_id, self._clock(), story_id, part_id, story_id),
            )
            return cursor.rowcount == 1

    async def delete(self, story_id: int) -> bool:
        """Forget a story and all its parts; False when there was none."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM story_parts WHERE story_id = ?", (story_id,))
            cursor = await db.execute("DELETE FROM stories WHERE id = ?", (story_id,))
            return cursor.rowcount == 1

    async def prune(self, retention_days: int) -> int:
        """Forget stories untouched for `retention_days` (0: keep all); returns how many went."""
        if retention_days <= 0:
            return 0
        cutoff = self._clock() - retention_days * DAY_S
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM story_parts WHERE story_id IN (SELECT id FROM stories WHERE updated_at < ?)", (cutoff,)
            )
            cursor = await db.execute("DELETE FROM stories WHERE updated_at < ?", (cutoff,))
            return cursor.rowcount

    async def threads_allowed(self, guild_id: int) -> bool:
        rows = list(await self._read("SELECT threads FROM guild_story_options WHERE guild_id = ?", (guild_id,)))
        return bool(rows[0][0]) if rows else True

    async def set_threads_allowed(self, guild_id: int, allowed: bool) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO guild_story_options (guild_id, threads) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET threads = excluded.threads",
                (guild_id, int(allowed)),
            )

    async def _assemble(self, row: sqlite3.Row | tuple) -> Story:
        story_id, owner, guild, channel, message, thread, opening, settings, shown_id, updated = tuple(row)
        parts = {
            part.id: part
            for part in map(
                _part,
                await self._read(f"SELECT {_PART_COLUMNS} FROM story_parts WHERE story_id = ?", (story_id,)),
            )
        }
        chain: list[Part] = []
        at = parts.get(shown_id) if shown_id is not None else None
        while at is not None:
            chain.append(at)
            at = parts.get(at.parent_id) if at.parent_id is not None else None
        chain.reverse()
        shown = chain[-1] if chain else None
        drafts = tuple(sorted(p.id for p in parts.values() if shown is not None and p.parent_id == shown.parent_id))
        return Story(
            story_id, owner, guild, channel, message, thread, opening, _decode(settings), tuple(chain), drafts, updated
        )


def _part(row: Iterable[Any]) -> Part:
    part_id, parent_id, author_id, added, settings, seed, text, stop_reason = tuple(row)
    return Part(
        part_id,
        parent_id,
        author_id,
        added,
        _decode(settings),
        seed,
        text,
        stop_reason,
        json.loads(settings).get(PRECISION_KEY, ""),
    )


PRECISION_KEY = "precision"
"""A part's settings are kept with the precision that wrote them, beside the decoding settings (no
schema change: parts kept before it simply have none)."""


def _encode(settings: DecodingSettings, precision: str = "") -> str:
    values = dataclasses.asdict(settings)
    if precision:
        values[PRECISION_KEY] = precision
    return json.dumps(values)


def _decode(text: str) -> DecodingSettings:
    values = json.loads(text)
    values.pop(PRECISION_KEY, None)
    return DecodingSettings.from_mapping(values)


def _storable(text: str) -> str:
    """SQLite takes UTF-8 only: a lone surrogate (a hostile prompt) is kept as U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text
