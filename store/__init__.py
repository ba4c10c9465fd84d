"""Per-user and per-server decoding preferences, and stories, in SQLite or PostgreSQL.

The cogs see `PreferencesStore` (and `Scope`, `ResolvedSettings`); `bot.py` opens the one that
`database` in config.yaml names (`open_store`).
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
