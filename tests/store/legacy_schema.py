"""SQLite files as Taleweaver wrote them before Alembic: schema versions 1-3 in `PRAGMA user_version`.

A frozen copy of the statements that version wrote (it is gone from store/), so that a test can
make such a file and prove today's Taleweaver takes it over with every value.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

APPLICATION_ID = 0x54616C65
STATEMENTS: dict[int, tuple[str, ...]] = {
    1: (
        f"PRAGMA application_id = {APPLICATION_ID}",
        "CREATE TABLE user_settings (user_id INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, "
        "PRIMARY KEY (user_id, field)) WITHOUT ROWID",
    ),
    2: (
        "CREATE TABLE guild_settings (guild_id INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, "
        "PRIMARY KEY (guild_id, field)) WITHOUT ROWID",
        "CREATE TABLE guild_limits (guild_id INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, "
        "PRIMARY KEY (guild_id, field)) WITHOUT ROWID",
    ),
    3: (
        "CREATE TABLE stories (id INTEGER PRIMARY KEY AUTOINCREMENT, owner_id INTEGER NOT NULL, guild_id INTEGER, "
        "channel_id INTEGER, message_id INTEGER, thread_id INTEGER UNIQUE, opening TEXT NOT NULL, "
        "settings TEXT NOT NULL, shown_part_id INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL)",
        "CREATE INDEX stories_updated ON stories (updated_at)",
        "CREATE TABLE story_parts (id INTEGER PRIMARY KEY AUTOINCREMENT, story_id INTEGER NOT NULL, "
        "parent_id INTEGER, author_id INTEGER NOT NULL, added TEXT NOT NULL DEFAULT '', settings TEXT NOT NULL, "
        "seed INTEGER NOT NULL, text TEXT NOT NULL, stop_reason TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL)",
        "CREATE INDEX story_parts_story ON story_parts (story_id, parent_id)",
        "CREATE TABLE guild_story_options (guild_id INTEGER PRIMARY KEY, threads INTEGER NOT NULL)",
    ),
}
LEGACY_VERSION = max(STATEMENTS)


def build_legacy_file(path: Path, version: int, rows: dict[int, list[tuple[str, tuple[object, ...]]]]) -> None:
    """A file at schema `version` with the rows each version up to it would have written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode = WAL")
        for added_in in range(1, version + 1):
            db.execute("BEGIN IMMEDIATE")
            for statement in STATEMENTS[added_in]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {added_in}")
            for sql, parameters in rows[added_in]:
                db.execute(sql, parameters)
            db.execute("COMMIT")
    db.close()
