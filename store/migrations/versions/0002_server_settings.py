"""Per-server defaults and limits.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    for table in ("guild_settings", "guild_limits"):
        op.create_table(
            table,
            sa.Column("guild_id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("field", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
            sqlite_with_rowid=False,
        )
