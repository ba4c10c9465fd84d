"""The schema of the preferences database, as numbered migrations applied at start-up.

The schema version lives in `PRAGMA user_version` and our mark in `PRAGMA application_id`; both
sit in the file header and are written in the same transaction as the migration they belong to,
so a crash leaves the database wholly at the old version or wholly at the new one.

Values are stored sparse, one row per setting somebody chose, as JSON text: a later change of
the defaults in config.yaml then reaches every setting a user never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiosqlite

from store.errors import StoreError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x54616C65
"""b"Tale": marks a file as a Taleweaver preferences database (see `PRAGMA application_id`)."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "per-user settings",
        (
            f"PRAGMA application_id = {APPLICATION_ID}",
            """CREATE TABLE user_settings (
                   user_id INTEGER NOT NULL,
                   field   TEXT    NOT NULL,
                   value   TEXT    NOT NULL,
                   PRIMARY KEY (user_id, field)
               ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "per-server defaults and limits",
        (
            """CREATE TABLE guild_settings (
                   guild_id INTEGER NOT NULL,
                   field    TEXT    NOT NULL,
                   value    TEXT    NOT NULL,
                   PRIMARY KEY (guild_id, field)
               ) WITHOUT ROWID""",
            """CREATE TABLE guild_limits (
                   guild_id INTEGER NOT NULL,
                   field    TEXT    NOT NULL,
                   value    TEXT    NOT NULL,
                   PRIMARY KEY (guild_id, field)
               ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        3,
        "stories: their place, opening and parts (drafts), and servers' thread switch",
        (
            # A story's parts form a tree: each part continues its parent (NULL: the opening);
            # siblings are drafts of one another, and `shown_part_id` is the end of the chain shown.
            """CREATE TABLE stories (
                   id            INTEGER PRIMARY KEY AUTOINCREMENT,
                   owner_id      INTEGER NOT NULL,
                   guild_id      INTEGER,
                   channel_id    INTEGER,
                   message_id    INTEGER,
                   thread_id     INTEGER UNIQUE,
                   opening       TEXT    NOT NULL,
                   settings      TEXT    NOT NULL,
                   shown_part_id INTEGER,
                   created_at    REAL    NOT NULL,
                   updated_at    REAL    NOT NULL
               )""",
            "CREATE INDEX stories_updated ON stories (updated_at)",
            """CREATE TABLE story_parts (
                   id         INTEGER PRIMARY KEY AUTOINCREMENT,
                   story_id   INTEGER NOT NULL,
                   parent_id  INTEGER,
                   author_id  INTEGER NOT NULL,
                   added      TEXT    NOT NULL DEFAULT '',
                   settings   TEXT    NOT NULL,
                   seed       INTEGER NOT NULL,
                   text       TEXT    NOT NULL,
                   stop_reason TEXT   NOT NULL DEFAULT '',
                   created_at REAL    NOT NULL
               )""",
            "CREATE INDEX story_parts_story ON story_parts (story_id, parent_id)",
            """CREATE TABLE guild_story_options (
                   guild_id INTEGER PRIMARY KEY,
                   threads  INTEGER NOT NULL
               )""",
        ),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


async def schema_version(db: aiosqlite.Connection, path: object) -> int:
    """The schema version of an open database, after checking that it is ours (or empty).

    Raises `StoreError` for a foreign database or one written by a newer Taleweaver, before
    anything is written to it.
    """
    application_id = await _pragma(db, "application_id")
    version = await _pragma(db, "user_version")
    (tables,) = await _one(db, "SELECT count(*) FROM sqlite_master")
    if application_id == 0 and version == 0 and tables == 0:
        return 0
    if application_id != APPLICATION_ID:
        raise StoreError(
            f"{path} is an SQLite database, but not a Taleweaver one. It was left untouched: "
            "point `database.path` in config.yaml at another file."
        )
    if version > LATEST_VERSION:
        raise StoreError(
            f"{path} was written by a newer Taleweaver (schema {version}; this one knows up to "
            f"{LATEST_VERSION}). It was left untouched: upgrade Taleweaver or use another file."
        )
    return version


async def migrate(db: aiosqlite.Connection, current: int, target: int | None = None) -> int:
    """Apply every migration after `current` up to `target` (None: all), each in its own transaction."""
    for migration in MIGRATIONS:
        if current < migration.version and (target is None or migration.version <= target):
            await _apply(db, migration)
            log.info("preferences database migrated to schema %d (%s)", migration.version, migration.description)
            current = migration.version
    return current


async def _apply(db: aiosqlite.Connection, migration: Migration) -> None:
    await db.execute("BEGIN IMMEDIATE")
    try:
        for statement in migration.statements:
            await db.execute(statement)
        # PRAGMA takes no bound parameters; the version is an int from this module.
        await db.execute(f"PRAGMA user_version = {int(migration.version)}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise


async def _pragma(db: aiosqlite.Connection, name: str) -> int:
    (value,) = await _one(db, f"PRAGMA {name}")
    return int(value)


async def _one(db: aiosqlite.Connection, sql: str) -> tuple:
    rows = await db.execute_fetchall(sql)
    return tuple(next(iter(rows)))
