"""`PreferencesStore` on either database: one set of queries, written in SQLAlchemy Core.

Every write validates its values inside its transaction (against the server's limits read in
the same transaction), writes them, and reads them back before committing: a write is
acknowledged only once committed and readable. The writes of one owner take turns in the order
this process received them (SQLite's single connection did that by itself; PostgreSQL's pool
would let a later click commit first), so the last `/settings set` wins. Rows are written in the
order of their field names, so that writes of one owner from two processes lock them in the same
order and never deadlock. `SqlitePreferencesStore` and `PostgresPreferencesStore` only open the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from core.errors import SettingsError
from core.settings import FIELDS, DecodingSettings, coerce_field
from store import schema
from store.database import Database, operation, turn
from store.errors import StoreUnavailableError
from store.interface import Scope
from store.resolve import LIMIT_FIELDS, ResolvedSettings, resolve_settings
from store.stories import SqlStoryStore
from store.validation import check_values

log = logging.getLogger(__name__)

_MAX_ID = 2**63 - 1
TURN_WAIT_S = 4.0
"""How long a write waits for the writes of the same owner received before it, then is answered "busy"."""
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MISSING = object()

_TABLES: dict[Scope, sa.Table] = {
    Scope.USER: schema.user_settings,
    Scope.SERVER: schema.guild_settings,
    Scope.SERVER_LIMIT: schema.guild_limits,
}


def _owner(table: sa.Table) -> sa.Column:
    return table.primary_key.columns[0]


_SELECT = {
    scope: sa.select(table.c.field, table.c.value).where(_owner(table) == sa.bindparam("owner"))
    for scope, table in _TABLES.items()
}
_DELETE = {
    scope: sa.delete(table).where(_owner(table) == sa.bindparam("owner"), table.c.field == sa.bindparam("name"))
    for scope, table in _TABLES.items()
}


def _layers(*scopes: Scope) -> sa.CompoundSelect:
    """The layers of one request in one query: user (bound as `user`) and the server's (bound as `guild`)."""
    return sa.union_all(
        *(
            sa.select(sa.literal(scope.value).label("scope"), _TABLES[scope].c.field, _TABLES[scope].c.value).where(
                _owner(_TABLES[scope]) == sa.bindparam("user" if scope is Scope.USER else "guild")
            )
            for scope in scopes
        )
    )


_USER_AND_SERVER = _layers(Scope.USER, Scope.SERVER, Scope.SERVER_LIMIT)
_SERVER_ONLY = _layers(Scope.SERVER, Scope.SERVER_LIMIT)


class SqlPreferencesStore:
    """Preferences (and stories) on a `Database`; create one with `SqlitePreferencesStore.open` or
    `PostgresPreferencesStore.open`."""

    def __init__(self, database: Database, *, config_defaults: DecodingSettings, max_new_tokens_cap: int) -> None:
        self.database = database
        self.config_defaults = config_defaults
        self.max_new_tokens_cap = max_new_tokens_cap
        self.stories = SqlStoryStore(database)
        """Stories live in the same database, behind the same transactions (store/stories.py)."""
        self._upserts = {scope: database.upsert(table, ["value"]) for scope, table in _TABLES.items()}
        self._turns: weakref.WeakValueDictionary[tuple[Scope, int], asyncio.Lock] = weakref.WeakValueDictionary()

    async def ping(self) -> bool:
        return await self.database.ping()

    async def close(self) -> None:
        await self.database.close()

    @operation("resolve")
    async def resolve(
        self, user_id: int, guild_id: int | None, overrides: Mapping[str, Any] = _EMPTY
    ) -> ResolvedSettings:
        _check_id(user_id)
        if guild_id is not None:
            _check_id(guild_id)
        layers = await self.database.read(_read_layers, _USER_AND_SERVER, {"user": user_id, "guild": guild_id})
        return resolve_settings(
            config_defaults=self.config_defaults,
            max_new_tokens_cap=self.max_new_tokens_cap,
            server=layers[Scope.SERVER],
            user=layers[Scope.USER],
            command=overrides,
            server_limits=layers[Scope.SERVER_LIMIT],
        )

    @operation("resolve_server")
    async def resolve_server(self, guild_id: int) -> ResolvedSettings:
        _check_id(guild_id)
        layers = await self.database.read(_read_layers, _SERVER_ONLY, {"guild": guild_id})
        return resolve_settings(
            config_defaults=self.config_defaults,
            max_new_tokens_cap=self.max_new_tokens_cap,
            server=layers[Scope.SERVER],
            server_limits=layers[Scope.SERVER_LIMIT],
        )

    @operation("get")
    async def get(self, scope: Scope, owner_id: int) -> dict[str, Any]:
        _check_id(owner_id)
        return await self.database.read(_read_layer, scope, owner_id)

    @operation("set")
    async def set(self, scope: Scope, owner_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        _check_id(owner_id)
        async with self._turn(scope, owner_id):
            return await self.database.write(self._set, scope, owner_id, values)

    def _set(self, connection: sa.Connection, scope: Scope, owner_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        server_limits = _read_layer(connection, Scope.SERVER_LIMIT, owner_id) if scope is Scope.SERVER else {}
        checked = check_values(scope, values, max_new_tokens_cap=self.max_new_tokens_cap, server_limits=server_limits)
        if not checked:
            return checked
        owner = _owner(_TABLES[scope]).name
        rows = [{owner: owner_id, "field": name, "value": json.dumps(checked[name])} for name in sorted(checked)]
        connection.execute(self._upserts[scope], rows)
        # Read back before committing: a damaged page can take a write and fail every read of it,
        # and a write is acknowledged only if it can be read.
        stored = _read_layer(connection, scope, owner_id)
        if any(stored.get(name, _MISSING) != value for name, value in checked.items()):
            raise StoreUnavailableError(
                "Preferences are unavailable right now: a saved value did not read back. Nothing was changed."
            )
        return checked

    @operation("reset")
    async def reset(self, scope: Scope, owner_id: int, fields: Collection[str] | None = None) -> tuple[str, ...]:
        _check_id(owner_id)
        if fields is not None:
            for name in fields:
                if name not in FIELDS:
                    coerce_field(name, None)  # raises the "no such setting" error
        async with self._turn(scope, owner_id):
            removed = await self.database.write(_reset, scope, owner_id, fields)
        return tuple(name for name in FIELDS if name in removed)

    def _turn(self, scope: Scope, owner_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        """Writes of one owner one after another, in the order this process received them."""
        return turn(self._turns.setdefault((scope, owner_id), asyncio.Lock()), TURN_WAIT_S)


def _read_layers(connection: sa.Connection, query: sa.CompoundSelect, owners: dict[str, Any]) -> dict[Scope, dict]:
    grouped: dict[Scope, list[tuple[str, str]]] = {scope: [] for scope in Scope}
    for scope, name, value in connection.execute(query, owners):
        grouped[Scope(scope)].append((name, value))
    return {scope: _decode(scope, layer) for scope, layer in grouped.items()}


def _read_layer(connection: sa.Connection, scope: Scope, owner_id: int) -> dict[str, Any]:
    return _decode(scope, connection.execute(_SELECT[scope], {"owner": owner_id}))


def _reset(connection: sa.Connection, scope: Scope, owner_id: int, fields: Collection[str] | None) -> set[str]:
    present = {name for name, _ in connection.execute(_SELECT[scope], {"owner": owner_id})}
    removed = present if fields is None else present.intersection(fields)
    if removed:
        connection.execute(_DELETE[scope], [{"owner": owner_id, "name": name} for name in sorted(removed)])
    return removed


def _check_id(owner_id: int) -> None:
    """Discord ids are positive 64-bit ints; anything else here is a bug, not a user's mistake."""
    if isinstance(owner_id, bool) or not isinstance(owner_id, int) or not 0 < owner_id <= _MAX_ID:
        raise ValueError(f"not a Discord id: {owner_id!r}")


def _decode(scope: Scope, rows: Iterable[Any]) -> dict[str, Any]:
    """Stored values, checked again: a range narrowed by a later version drops the value, with a log line."""
    values: dict[str, Any] = {}
    for name, text in rows:
        try:
            if scope is Scope.SERVER_LIMIT and name not in LIMIT_FIELDS:
                raise SettingsError(name, "cannot be limited")
            values[name] = coerce_field(name, json.loads(text))
        except (SettingsError, ValueError) as exc:
            log.warning("ignoring a stored %s value of %s: %s", scope.value, name, exc)
    return values
