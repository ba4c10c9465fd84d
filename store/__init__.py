"""Per-user and per-server decoding preferences, kept in SQLite.

The cogs see `PreferencesStore` (and `Scope`, `ResolvedSettings`); `bot.py` opens the SQLite one.
"""

from store.errors import StoreBusyError, StoreCorruptError, StoreError, StoreUnavailableError
from store.interface import PreferencesStore, Scope
from store.resolve import LIMIT_FIELDS, Clamp, Limit, ResolvedSettings, resolve_settings
from store.sqlite import SqlitePreferencesStore

__all__ = [
    "LIMIT_FIELDS",
    "Clamp",
    "Limit",
    "PreferencesStore",
    "ResolvedSettings",
    "Scope",
    "SqlitePreferencesStore",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "resolve_settings",
]
