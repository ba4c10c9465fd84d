"""Per-user and per-server decoding preferences, and stories, kept in SQLite.

The cogs see `PreferencesStore` (and `Scope`, `ResolvedSettings`); `bot.py` opens the SQLite one.
"""

from store.errors import StoreBusyError, StoreCorruptError, StoreError, StoreUnavailableError
from store.interface import PreferencesStore, Scope, StoryStore
from store.records import Part, Story
from store.resolve import LIMIT_FIELDS, Clamp, Limit, ResolvedSettings, resolve_settings
from store.sqlite import SqlitePreferencesStore

__all__ = [
    "LIMIT_FIELDS",
    "Clamp",
    "Limit",
    "Part",
    "PreferencesStore",
    "ResolvedSettings",
    "Scope",
    "SqlitePreferencesStore",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "Story",
    "StoryStore",
    "resolve_settings",
]
