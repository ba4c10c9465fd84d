"""The tables as the queries see them (schema head), described once for SQLite and PostgreSQL.

Migrations (store/migrations/versions) create and change them; these descriptions must match the
latest one, which a test checks on both databases. Discord ids are 64-bit: BIGINT on PostgreSQL,
SQLite's INTEGER anyway. Values are stored sparse, one row per setting somebody chose, as JSON
text: a later change of the defaults in config.yaml then reaches every setting a user never touched.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""A generated id: BIGSERIAL on PostgreSQL, SQLite's rowid alias (which must be spelled INTEGER)."""


def _layer(name: str, owner: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column(owner, sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("field", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sqlite_with_rowid=False,
    )


user_settings = _layer("user_settings", "user_id")
guild_settings = _layer("guild_settings", "guild_id")
guild_limits = _layer("guild_limits", "guild_id")

stories = sa.Table(
    "stories",
    metadata,
    sa.Column("id", RowId, primary_key=True),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("guild_id", sa.BigInteger),
    sa.Column("channel_id", sa.BigInteger),
    sa.Column("message_id", sa.BigInteger),
    sa.Column("thread_id", sa.BigInteger, unique=True),
    sa.Column("opening", sa.Text, nullable=False),
    sa.Column("settings", sa.Text, nullable=False),
    # A story's parts form a tree: each part continues its parent (NULL: the opening); siblings
    # are drafts of one another, and `shown_part_id` is the end of the chain the message shows.
    sa.Column("shown_part_id", sa.BigInteger),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("stories_updated", "updated_at"),
    sqlite_autoincrement=True,
)

story_parts = sa.Table(
    "story_parts",
    metadata,
    sa.Column("id", RowId, primary_key=True),
    sa.Column("story_id", sa.BigInteger, nullable=False),
    sa.Column("parent_id", sa.BigInteger),
    sa.Column("author_id", sa.BigInteger, nullable=False),
    sa.Column("added", sa.Text, nullable=False, server_default=""),
    sa.Column("settings", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("stop_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("story_parts_story", "story_id", "parent_id"),
    sqlite_autoincrement=True,
)

guild_story_options = sa.Table(
    "guild_story_options",
    metadata,
    sa.Column("guild_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("threads", sa.Boolean, nullable=False),
)
