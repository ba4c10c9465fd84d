"""The preferences store, on SQLite and on PostgreSQL: what it keeps, across restarts and under concurrent use."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from prometheus_client import REGISTRY

from core.errors import SettingsError
from core.settings import FIELDS, DecodingSettings
from store import PreferencesStore, Scope, SqlitePreferencesStore, StoreUnavailableError
from store.postgres import PostgresPreferencesStore
from store.preferences import SqlPreferencesStore
from tests.store.conftest import OpenStore, execute

USER, OTHER_USER, GUILD = 1001, 1002, 555


@pytest.mark.parametrize("implementation", [SqlitePreferencesStore, PostgresPreferencesStore])
def test_each_store_has_every_method_of_the_interface_with_its_parameters(implementation: type) -> None:
    """The cogs are written against `PreferencesStore`; both stores must match it."""
    for name, member in inspect.getmembers(PreferencesStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = getattr(implementation, name)
        assert inspect.iscoroutinefunction(ours), name
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(member).parameters), name


async def test_user_settings_survive_closing_and_reopening(open_store: OpenStore) -> None:
    """A restart (close, reopen the same file) keeps every saved value, with its type."""
    store = await open_store()
    await store.set(Scope.USER, USER, {"temperature": 0.5, "top_k": 7, "strategy": "beam", "seed": 42})
    await store.set(Scope.SERVER, GUILD, {"num_beams": 3})
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 200})
    await store.close()

    reopened = await open_store()
    assert await reopened.get(Scope.USER, USER) == {"temperature": 0.5, "top_k": 7, "strategy": "beam", "seed": 42}
    assert await reopened.get(Scope.SERVER, GUILD) == {"num_beams": 3}
    assert await reopened.get(Scope.SERVER_LIMIT, GUILD) == {"max_new_tokens": 200}
    assert isinstance((await reopened.get(Scope.USER, USER))["top_k"], int)


async def test_only_chosen_fields_are_stored_so_new_config_defaults_reach_the_rest(open_store: OpenStore) -> None:
    """After the config's defaults change, a user's untouched fields follow them; set ones do not."""
    store = await open_store(config_defaults=DecodingSettings(temperature=0.8, top_k=40))
    await store.set(Scope.USER, USER, {"temperature": 0.5})
    await store.close()

    store = await open_store(config_defaults=DecodingSettings(temperature=1.2, top_k=10))
    resolved = await store.resolve(USER, None)
    assert resolved.settings.temperature == 0.5
    assert resolved.settings.top_k == 10
    assert resolved.sources["top_k"] == "config"


async def test_users_and_servers_do_not_see_each_others_values(store: SqlPreferencesStore) -> None:
    """Values are kept per owner and per layer; a server id equal to a user id is another owner."""
    await store.set(Scope.USER, USER, {"temperature": 0.5})
    await store.set(Scope.SERVER, USER, {"temperature": 1.5})
    assert await store.get(Scope.USER, OTHER_USER) == {}
    assert await store.get(Scope.USER, USER) == {"temperature": 0.5}
    assert await store.get(Scope.SERVER, USER) == {"temperature": 1.5}


async def test_set_overwrites_only_the_fields_given(store: SqlPreferencesStore) -> None:
    """A second set changes its own fields and keeps the others."""
    await store.set(Scope.USER, USER, {"temperature": 0.5, "top_k": 7})
    await store.set(Scope.USER, USER, {"top_k": 9})
    assert await store.get(Scope.USER, USER) == {"temperature": 0.5, "top_k": 9}


async def test_reset_one_field_returns_it_and_keeps_the_others(store: SqlPreferencesStore) -> None:
    """Resetting one setting forgets only that one and says it had a value."""
    await store.set(Scope.USER, USER, {"temperature": 0.5, "top_k": 7})
    assert await store.reset(Scope.USER, USER, ["temperature"]) == ("temperature",)
    assert await store.reset(Scope.USER, USER, ["temperature"]) == ()
    assert await store.get(Scope.USER, USER) == {"top_k": 7}


async def test_reset_all_forgets_every_field_of_that_owner_only(store: SqlPreferencesStore) -> None:
    """Reset-all empties one owner's layer and leaves other users alone."""
    await store.set(Scope.USER, USER, {"top_k": 7, "temperature": 0.5})
    await store.set(Scope.USER, OTHER_USER, {"top_k": 3})
    assert await store.reset(Scope.USER, USER) == ("temperature", "top_k")
    assert await store.get(Scope.USER, USER) == {}
    assert await store.get(Scope.USER, OTHER_USER) == {"top_k": 3}


async def test_reset_of_an_unknown_setting_is_refused(store: SqlPreferencesStore) -> None:
    """A name that is not a setting is an error naming it, not a silent no-op."""
    with pytest.raises(SettingsError, match="colour"):
        await store.reset(Scope.USER, USER, ["colour"])


async def test_fifty_concurrent_updates_from_one_user_all_land(store: SqlPreferencesStore) -> None:
    """50 concurrent writes to different settings lose nothing: each field holds its last write."""
    numeric = [name for name, spec in FIELDS.items() if spec.choices is None and name != "max_new_tokens"]
    updates = []
    for i in range(50):
        name = numeric[i % len(numeric)]
        spec = FIELDS[name]
        step = i // len(numeric)
        value = spec.minimum + (step % (spec.maximum - spec.minimum + 1) if spec.kind is int else step / 100)
        updates.append({name: value})

    await asyncio.gather(*(store.set(Scope.USER, USER, update) for update in updates))

    expected: dict[str, object] = {}
    for update in updates:
        expected.update(update)
    assert await store.get(Scope.USER, USER) == pytest.approx(expected)


async def test_concurrent_readers_never_see_half_of_a_write(store: SqlPreferencesStore) -> None:
    """A write of two fields is seen whole or not at all by reads running at the same time."""
    writes = [store.set(Scope.USER, USER, {"top_k": i, "no_repeat_ngram_size": i % 11}) for i in range(40)]
    reads = [store.get(Scope.USER, USER) for _ in range(40)]
    results = await asyncio.gather(*(c for pair in zip(writes, reads, strict=True) for c in pair))
    for seen in results[1::2]:
        if seen:
            assert seen["no_repeat_ngram_size"] == seen["top_k"] % 11


async def test_a_stored_value_outside_todays_range_is_ignored(store: SqlPreferencesStore) -> None:
    """A value written under an older, wider range (or by hand) is dropped on read, not crashed on."""
    await store.set(Scope.USER, USER, {"top_k": 7})
    await execute(store, "INSERT INTO user_settings VALUES (:user, 'temperature', '9.5')", user=USER)
    await execute(store, "INSERT INTO user_settings VALUES (:user, 'colour', '\"red\"')", user=USER)
    assert await store.get(Scope.USER, USER) == {"top_k": 7}
    assert (await store.resolve(USER, None)).settings.temperature == DecodingSettings().temperature


async def test_a_closed_store_says_the_bot_is_shutting_down(store: SqlPreferencesStore) -> None:
    """Commands racing the shutdown get a message, not a crash inside aiosqlite."""
    await store.close()
    with pytest.raises(StoreUnavailableError, match="shutting down"):
        await store.get(Scope.USER, USER)


@pytest.mark.parametrize("owner", [0, -5, 2**63, True, "1001", 1.0])
async def test_an_id_that_is_not_a_discord_id_is_a_bug(store: SqlPreferencesStore, owner: object) -> None:
    """Ids come from Discord, never from users; anything else is a programming error."""
    with pytest.raises(ValueError, match="not a Discord id"):
        await store.get(Scope.USER, owner)  # type: ignore[arg-type]


async def test_resolve_uses_user_server_and_limits_from_the_database(store: SqlPreferencesStore) -> None:
    """The store feeds its three layers to the one resolution function."""
    await store.set(Scope.SERVER, GUILD, {"temperature": 1.1, "top_k": 5})
    await store.set(Scope.USER, USER, {"temperature": 0.6, "max_new_tokens": 250})
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 200})

    resolved = await store.resolve(USER, GUILD, {"top_p": 0.9})

    assert (resolved.settings.temperature, resolved.settings.top_k, resolved.settings.top_p) == (0.6, 5, 0.9)
    assert resolved.settings.max_new_tokens == 200
    assert [resolved.sources[n] for n in ("temperature", "top_k", "top_p")] == ["you", "server", "this command"]
    assert resolved.notes == ("`max_new_tokens` 250 was capped to 200 by this server's limit.",)


async def test_resolve_in_dms_ignores_every_server(store: SqlPreferencesStore) -> None:
    """Without a server there are no server defaults or limits, only the bot's cap."""
    await store.set(Scope.SERVER, GUILD, {"temperature": 1.1})
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 50})
    resolved = await store.resolve(USER, None)
    assert resolved.settings.temperature == DecodingSettings().temperature
    assert dict(resolved.limits).keys() == {"max_new_tokens"}
    assert resolved.limits["max_new_tokens"].by == "bot"


async def test_resolve_server_leaves_out_every_user(store: SqlPreferencesStore) -> None:
    """What a member gets before their own settings: server defaults and limits only."""
    await store.set(Scope.USER, USER, {"temperature": 0.6})
    await store.set(Scope.SERVER, GUILD, {"top_k": 5})
    resolved = await store.resolve_server(GUILD)
    assert resolved.settings.top_k == 5
    assert resolved.settings.temperature == DecodingSettings().temperature
    assert "you" not in resolved.sources.values()


async def test_each_operation_is_timed_by_operation_and_outcome(store: SqlPreferencesStore) -> None:
    """`taleweaver_database_seconds` counts a saved write as ok, and a refused value as refused."""

    def count(operation: str, outcome: str) -> float:
        labels = {"operation": operation, "outcome": outcome}
        return REGISTRY.get_sample_value("taleweaver_database_seconds_count", labels) or 0.0

    ok, refused, reads = count("set", "ok"), count("set", "refused"), count("story.get", "ok")
    await store.set(Scope.USER, USER, {"top_k": 7})
    with pytest.raises(SettingsError):
        await store.set(Scope.USER, USER, {"top_k": -1})
    await store.stories.get(1)
    assert (count("set", "ok"), count("set", "refused"), count("story.get", "ok")) == (ok + 1, refused + 1, reads + 1)
