"""What can go wrong with the database (SQLite or PostgreSQL), in words for whoever has to act on it.

`StoreError` stops the bot at start-up (the owner reads it in the console); `StoreUnavailableError`
is raised at run time and shown to the Discord user, so it says what happened and that nothing
was changed, never a file path.
"""

from __future__ import annotations

import sqlite3

from core.errors import TaleweaverError


class StoreError(TaleweaverError):
    """The database cannot be used at start-up; the bot refuses to touch it."""


class StoreUnavailableError(TaleweaverError):
    """A read or write failed at run time (busy, read-only, disk full, I/O error)."""


BUSY_MESSAGE = "Preferences are busy. Please try again in a moment. Nothing was changed."


class StoreBusyError(StoreUnavailableError):
    """Another process (or a queue of this bot's own requests) held the database, or its
    connections, past the bound."""

    def __init__(self, message: str = BUSY_MESSAGE) -> None:
        super().__init__(message)


class StoreCorruptError(StoreUnavailableError):
    """The database found damaged data while the bot was running."""


# Primary SQLite result codes (https://www.sqlite.org/rescode.html).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26


def primary_code(exc: sqlite3.Error) -> int | None:
    """The primary result code of an SQLite error (extended codes keep it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def unavailable(exc: sqlite3.Error) -> StoreUnavailableError:
    """The user-facing error for an SQLite failure at run time; the transaction has been rolled back."""
    code = primary_code(exc)
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreBusyError()
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return StoreCorruptError(
            "Preferences are unavailable right now: the preferences database could not be reached (it is "
            "damaged). Please tell the bot's owner. Nothing was changed."
        )
    if code == SQLITE_READONLY:
        return read_only()
    if code == SQLITE_FULL:
        return disk_full()
    return unreachable()


def read_only() -> StoreUnavailableError:
    return _unavailable("the preferences database is read-only. Please tell the bot's owner")


def disk_full() -> StoreUnavailableError:
    return _unavailable("the bot's disk is full. Please tell the bot's owner")


def unreachable() -> StoreUnavailableError:
    return _unavailable("the preferences database could not be reached. Please try again later")


def outcome_unknown() -> StoreUnavailableError:
    """The connection was lost while committing: the server may have kept the change or not."""
    return StoreUnavailableError(
        "The preferences database stopped answering while saving, so the change may or may not have been kept. "
        "Please check, and try again later."
    )


def _unavailable(reason: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"Preferences are unavailable right now: {reason}. Nothing was changed.")
