"""Stories on either database: who owns one, where it is, its opening and its parts (with drafts).

A story's parts form a tree: each part continues its parent (none: the opening), and parts
with the same parent are drafts of one another (Regenerate adds one). `shown_part_id` ends the
chain the story message shows. A part is written only once it is finished, in one transaction
with the move of `shown_part_id`, so a crash mid-part loses that part and nothing else.

Writes that remove a story lock its row first (`FOR UPDATE`; SQLite's write lock covers it
anyway): on PostgreSQL a part being added by another process then either lands before the
removal, and goes with the story, or finds the story gone, never leaving a part without its story.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from core.settings import DecodingSettings
from store.database import Database, operation
from store.records import Part, Story
from store.schema import guild_story_options, stories, story_parts

DAY_S = 24 * 60 * 60

_STORY_COLUMNS = (
    stories.c.id,
    stories.c.owner_id,
    stories.c.guild_id,
    stories.c.channel_id,
    stories.c.message_id,
    stories.c.thread_id,
    stories.c.opening,
    stories.c.settings,
    stories.c.shown_part_id,
    stories.c.updated_at,
)
_PARTS_OF = sa.select(
    story_parts.c.id,
    story_parts.c.parent_id,
    story_parts.c.author_id,
    story_parts.c.added,
    story_parts.c.settings,
    story_parts.c.seed,
    story_parts.c.text,
    story_parts.c.stop_reason,
).where(story_parts.c.story_id == sa.bindparam("story_id"))


class SqlStoryStore:
    """`StoryStore` on the preferences database. Every write is one transaction; reads see committed data."""

    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self._clock = clock
        self._upsert_options = database.upsert(guild_story_options, ["threads"])

    @operation("story.create")
    async def create(
        self, owner_id: int, guild_id: int | None, channel_id: int | None, opening: str, settings: DecodingSettings
    ) -> int:
        """A new story with no part yet; its id goes into the custom ids of its buttons."""
        now = self._clock()
        row = {
            "owner_id": owner_id,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "opening": _storable(opening),
            "settings": _encode(settings),
            "created_at": now,
            "updated_at": now,
        }
        return await self.database.write(_insert, stories, row)

    @operation("story.set_message")
    async def set_message(self, story_id: int, message_id: int) -> None:
        await self.database.write(_update, stories.c.id == story_id, {"message_id": message_id})

    @operation("story.set_thread")
    async def set_thread(self, story_id: int, thread_id: int) -> bool:
        """Tie a thread to the story; False when the story already has one (or is gone)."""
        where = sa.and_(stories.c.id == story_id, stories.c.thread_id.is_(None))
        return await self.database.write(_update, where, {"thread_id": thread_id, "updated_at": self._clock()}) == 1

    @operation("story.get")
    async def get(self, story_id: int) -> Story | None:
        return await self.database.read(_story, stories.c.id == story_id)

    @operation("story.by_thread")
    async def by_thread(self, thread_id: int) -> Story | None:
        return await self.database.read(_story, stories.c.thread_id == thread_id)

    @operation("story.add_part")
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
        row = {
            "story_id": story_id,
            "parent_id": parent_id,
            "author_id": author_id,
            "added": _storable(added),
            "settings": _encode(settings, precision),
            "seed": seed,
            "text": _storable(text),
            "stop_reason": stop_reason,
            "created_at": self._clock(),
        }
        part_id = await self.database.write(self._add_part, story_id, row)
        if part_id is None:
            return None
        return Part(part_id, parent_id, author_id, added, settings, seed, text, stop_reason, precision)

    def _add_part(self, connection: sa.Connection, story_id: int, row: dict[str, Any]) -> int | None:
        if not _lock(connection, stories.c.id == story_id):
            return None
        part_id = _insert(connection, story_parts, row)
        _update(connection, stories.c.id == story_id, {"shown_part_id": part_id, "updated_at": self._clock()})
        return part_id

    @operation("story.show")
    async def show(self, story_id: int, part_id: int) -> bool:
        """Show another draft (a part of this story); False when there is no such part."""
        is_a_part = (
            sa.select(story_parts.c.id).where(story_parts.c.id == part_id, story_parts.c.story_id == story_id).exists()
        )
        where = sa.and_(stories.c.id == story_id, is_a_part)
        return await self.database.write(_update, where, {"shown_part_id": part_id, "updated_at": self._clock()}) == 1

    @operation("story.delete")
    async def delete(self, story_id: int) -> bool:
        """Forget a story and all its parts; False when there was none."""
        return await self.database.write(_remove, stories.c.id == story_id) == 1

    @operation("story.prune")
    async def prune(self, retention_days: int) -> int:
        """Forget stories untouched for `retention_days` (0: keep all); returns how many went."""
        if retention_days <= 0:
            return 0
        return await self.database.write(_remove, stories.c.updated_at < self._clock() - retention_days * DAY_S)

    @operation("story.threads_allowed")
    async def threads_allowed(self, guild_id: int) -> bool:
        allowed = await self.database.read(_threads_allowed, guild_id)
        return True if allowed is None else bool(allowed)

    @operation("story.set_threads_allowed")
    async def set_threads_allowed(self, guild_id: int, allowed: bool) -> None:
        await self.database.write(_execute, self._upsert_options, {"guild_id": guild_id, "threads": allowed})


def _insert(connection: sa.Connection, table: sa.Table, row: dict[str, Any]) -> int:
    return connection.execute(sa.insert(table).values(row).returning(table.c.id)).scalar_one()


def _update(connection: sa.Connection, where: sa.ColumnElement[bool], values: dict[str, Any]) -> int:
    """Update the matching stories; how many matched."""
    return connection.execute(sa.update(stories).where(where).values(values)).rowcount


def _execute(connection: sa.Connection, statement: sa.Executable, parameters: dict[str, Any]) -> None:
    connection.execute(statement, parameters)


def _threads_allowed(connection: sa.Connection, guild_id: int) -> bool | None:
    return connection.scalar(sa.select(guild_story_options.c.threads).where(guild_story_options.c.guild_id == guild_id))


def _story(connection: sa.Connection, where: sa.ColumnElement[bool]) -> Story | None:
    row = connection.execute(sa.select(*_STORY_COLUMNS).where(where)).first()
    if row is None:
        return None
    return _assemble(tuple(row), connection.execute(_PARTS_OF, {"story_id": row.id}))


def _lock(connection: sa.Connection, where: sa.ColumnElement[bool]) -> list[int]:
    """The ids of the stories that match, locked until the transaction ends."""
    return list(connection.execute(sa.select(stories.c.id).where(where).with_for_update()).scalars())


def _remove(connection: sa.Connection, where: sa.ColumnElement[bool]) -> int:
    """Delete the matching stories with their parts; how many stories went."""
    if not _lock(connection, where):
        return 0
    connection.execute(sa.delete(story_parts).where(story_parts.c.story_id.in_(sa.select(stories.c.id).where(where))))
    return connection.execute(sa.delete(stories).where(where)).rowcount


def _assemble(row: tuple, part_rows: Iterable[Any]) -> Story:
    story_id, owner, guild, channel, message, thread, opening, settings, shown_id, updated = row
    parts = {part.id: part for part in map(_part, part_rows)}
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


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    """Both databases take UTF-8 only, and PostgreSQL no NUL: a lone surrogate or a NUL (a hostile
    prompt, or the model's byte soup) is kept as U+FFFD, the same on either database."""
    return _UNSTORABLE.sub("\ufffd", text)
