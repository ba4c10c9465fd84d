"""What a layer may hold: the settings type's ranges, narrowed by the limits that always apply.

A saved value that could never be used is refused rather than kept: a user's `max_new_tokens`
above the bot's cap, or a server default above that server's own limit. A user's value above a
server's limit is kept, because the user's settings follow them into other servers; it is
capped (with a note) where the limit applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from core.errors import SettingsError
from core.settings import FIELDS, coerce_field
from store.interface import Scope
from store.resolve import LIMIT_FIELDS, Limit, effective_limits


def check_values(
    scope: Scope, values: Mapping[str, Any], *, max_new_tokens_cap: int, server_limits: Mapping[str, Any]
) -> dict[str, Any]:
    """Every value coerced and checked for `scope`; the first bad one raises `SettingsError`."""
    ceilings = effective_limits(server_limits if scope is Scope.SERVER else {}, max_new_tokens_cap)
    checked: dict[str, Any] = {}
    for name, raw in values.items():
        if scope is Scope.SERVER_LIMIT and name in FIELDS and name not in LIMIT_FIELDS:
            raise SettingsError(name, f"a server can limit only {', '.join(LIMIT_FIELDS)}.")
        value = coerce_field(name, raw)  # unknown names are refused here, with the list of known ones
        ceiling = ceilings.get(name)
        if ceiling is not None and value > ceiling.value:
            raise SettingsError(name, _above(name, value, ceiling))
        checked[name] = value
    return checked


def _above(name: str, value: Any, ceiling: Limit) -> str:
    allowed = dataclasses.replace(FIELDS[name], maximum=ceiling.value).describe_range()
    return f"must be {allowed} ({ceiling.owner}), not {value!r}."
