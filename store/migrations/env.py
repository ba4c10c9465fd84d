"""Alembic's environment: migrations run on the connection (and in the transaction) `store.migrations` hands in."""

from alembic import context

from store.migrations import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
