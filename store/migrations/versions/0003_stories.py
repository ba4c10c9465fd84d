"""Stories: their place, opening and parts (drafts), and servers' thread switch.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", RowId, primary_key=True),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("guild_id", sa.BigInteger),
        sa.Column("channel_id", sa.BigInteger),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("thread_id", sa.BigInteger, unique=True),
        sa.Column("opening", sa.Text, nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("shown_part_id", sa.BigInteger),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("stories_updated", "stories", ["updated_at"])
    op.create_table(
        "story_parts",
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
        sqlite_autoincrement=True,
    )
    op.create_index("story_parts_story", "story_parts", ["story_id", "parent_id"])
    op.create_table(
        "guild_story_options",
        sa.Column("guild_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("threads", sa.Boolean, nullable=False),
    )
