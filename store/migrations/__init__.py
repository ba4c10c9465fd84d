"""The schema's history as Alembic revisions (versions/), applied at start-up on either database.

`upgrade` runs inside the caller's transaction, after the caller took the database's migration
lock (PostgreSQL: an advisory lock; SQLite: the write lock of `BEGIN IMMEDIATE`), and reads the
version only then: two processes starting at once migrate once, the second finds the work done.
DDL is transactional on both databases, so a failed migration leaves the old version whole.

SQLite files also carry the version in `PRAGMA user_version` and our mark in `PRAGMA
application_id` (the file header, written in the same transaction): that is how Taleweaver
recorded them before Alembic (schemas 1-3), so such a file is stamped at its revision, then
upgraded, and an older Taleweaver still refuses a file that a newer one migrated.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from store.errors import StoreError

log = logging.getLogger(__name__)

VERSION_TABLE = "taleweaver_schema_version"
"""Our own name for Alembic's version table, so another application's Alembic in the same
PostgreSQL database is never mistaken for ours."""
SCRIPTS = Path(__file__).resolve().parent
APPLICATION_ID = 0x54616C65
"""b"Tale": marks an SQLite file as a Taleweaver database (see `PRAGMA application_id`)."""


def script_directory() -> ScriptDirectory:
    return _scripts_in(SCRIPTS)


@functools.cache
def _scripts_in(folder: Path) -> ScriptDirectory:
    """Alembic reads every revision file when it makes one: once per folder is enough."""
    return ScriptDirectory(str(folder))


def latest_version() -> int:
    """The newest schema this Taleweaver knows (revision ids are numbers: 0001, 0002, ...)."""
    return int(script_directory().get_current_head() or 0)


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at; None when it has no version table (new, or not ours)."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(connection: Connection, where: str, target: str = "head") -> int:
    """Apply every revision after the database's own up to `target`, in the open transaction; the new version."""
    scripts = script_directory()
    known = {script.revision for script in scripts.walk_revisions()}
    current = current_revision(connection)
    if current is not None and current not in known:
        raise StoreError(
            f"{where} was written by a newer Taleweaver (schema {current}; this one knows up to "
            f"{latest_version():04d}). It was left untouched: upgrade Taleweaver or use another database."
        )
    if current is not None and current == scripts.get_current_head():
        return int(current)  # the common start: nothing to do, and no need for Alembic's environment
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    sqlite = connection.dialect.name == "sqlite"
    if current is None and sqlite:
        legacy = connection.exec_driver_sql("PRAGMA user_version").scalar_one()
        if legacy:
            command.stamp(config, f"{legacy:04d}")
    command.upgrade(config, target)
    version = int(current_revision(connection) or 0)
    if sqlite:
        # PRAGMA takes no bound parameters; both values are ints from this module and Alembic's ids.
        connection.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.exec_driver_sql(f"PRAGMA user_version = {version}")
    if current is None or int(current) != version:
        log.info("database migrated from schema %s to %d", current or "(empty)", version)
    return version
