"""Every bad value is refused with a message naming the setting and its range, and nothing changes.

The values are what a modified client could send: NaN, infinities, negatives, huge numbers,
the wrong type, numbers as text.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import SettingsError
from core.settings import FIELDS, coerce_field
from store import Scope, SqlitePreferencesStore
from tests.store.conftest import CAP

USER, GUILD = 1001, 555
BEFORE = {"temperature": 0.5, "top_k": 7}

NUMERIC = [name for name, spec in FIELDS.items() if spec.choices is None]
HOSTILE = [math.nan, math.inf, -math.inf, -1, 10**30, 1e308, "0.5", "1", True, [1], {"v": 1}, b"1"]
BAD_VALUES = (
    [(name, value) for name in NUMERIC for value in HOSTILE]
    + [(name, None) for name in FIELDS if not FIELDS[name].optional]
    + [
        ("strategy", "fast"),
        ("strategy", 1),
        ("strategy", "GREEDY"),
        ("strategy", ["beam"]),
        ("top_k", 2.5),
        ("num_beams", 1),
        ("num_beams", 9),
        ("temperature", 0.0),
        ("top_p", 1.01),
        ("seed", 2**31),
        ("max_new_tokens", 0),
        ("max_new_tokens", CAP + 1),
    ]
)


@pytest.fixture
async def filled(store: SqlitePreferencesStore) -> SqlitePreferencesStore:
    await store.set(Scope.USER, USER, BEFORE)
    return store


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=lambda v: repr(v)[:20])
async def test_a_bad_value_is_refused_with_its_range_and_nothing_changes(
    filled: SqlitePreferencesStore, name: str, value: Any
) -> None:
    """The error names the setting and what is allowed; the saved values are as before."""
    with pytest.raises(SettingsError) as caught:
        await filled.set(Scope.USER, USER, {name: value})
    assert caught.value.field == name
    assert f"`{name}`" in caught.value.message
    assert "must be" in caught.value.message or "required" in caught.value.message
    assert await filled.get(Scope.USER, USER) == BEFORE


async def test_one_bad_value_among_good_ones_saves_none_of_them(filled: SqlitePreferencesStore) -> None:
    """A write is checked whole before anything is stored."""
    with pytest.raises(SettingsError, match="top_p"):
        await filled.set(Scope.USER, USER, {"temperature": 1.5, "top_k": 3, "top_p": math.nan})
    assert await filled.get(Scope.USER, USER) == BEFORE


async def test_an_unknown_setting_is_refused_with_the_list_of_known_ones(filled: SqlitePreferencesStore) -> None:
    """A typo gets the names that exist."""
    with pytest.raises(SettingsError, match="known settings: strategy"):
        await filled.set(Scope.USER, USER, {"temprature": 0.5})


async def test_max_new_tokens_above_the_bots_cap_is_refused_with_the_cap(filled: SqlitePreferencesStore) -> None:
    """A value the bot could never use is not saved; the message gives the range on this bot."""
    with pytest.raises(SettingsError, match=rf"from 1 to {CAP} \(the bot's limit\)"):
        await filled.set(Scope.USER, USER, {"max_new_tokens": CAP + 1})


async def test_a_users_value_above_a_server_limit_is_kept(store: SqlitePreferencesStore) -> None:
    """User settings follow them to other servers, so one server's limit does not refuse them."""
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 100})
    assert await store.set(Scope.USER, USER, {"max_new_tokens": 250}) == {"max_new_tokens": 250}


async def test_a_server_default_above_its_own_limit_is_inconsistent(store: SqlitePreferencesStore) -> None:
    """A default the server's limit would always lower is refused, naming the allowed range."""
    await store.set(Scope.SERVER_LIMIT, GUILD, {"num_beams": 3})
    with pytest.raises(SettingsError, match=r"`num_beams`: must be a whole number from 2 to 3 \(this server's"):
        await store.set(Scope.SERVER, GUILD, {"num_beams": 4})
    assert await store.get(Scope.SERVER, GUILD) == {}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"top_k": 5}, "a server can limit only"),
        ({"max_new_tokens": CAP + 1}, "the bot's limit"),
        ({"temperature": math.inf}, "must be a number from 0.05 to 2.0"),
        ({"num_beams": 1}, "from 2 to 8"),
    ],
)
async def test_a_bad_server_limit_is_refused(store: SqlitePreferencesStore, values: dict, match: str) -> None:
    """Limits exist for a few settings, within their ranges and the bot's cap."""
    with pytest.raises(SettingsError, match=match):
        await store.set(Scope.SERVER_LIMIT, GUILD, values)
    assert await store.get(Scope.SERVER_LIMIT, GUILD) == {}


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["greedy", "beam", "sampling", "0.5", "nan"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(FIELDS)), value=ANY_VALUE)
async def test_any_value_is_either_saved_as_checked_or_refused_with_nothing_changed(
    store: SqlitePreferencesStore, name: str, value: Any
) -> None:
    """Whatever arrives, the store saves exactly what `coerce_field` accepts, or nothing."""
    before = await store.get(Scope.USER, USER)
    try:
        expected = coerce_field(name, value)
        acceptable = not (name == "max_new_tokens" and expected > CAP)
    except SettingsError:
        acceptable = False
    if acceptable:
        await store.set(Scope.USER, USER, {name: value})
        assert (await store.get(Scope.USER, USER))[name] == expected
    else:
        with pytest.raises(SettingsError):
            await store.set(Scope.USER, USER, {name: value})
        assert await store.get(Scope.USER, USER) == before
