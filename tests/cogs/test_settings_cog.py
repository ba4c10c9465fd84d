"""/settings and /server-settings with a real SQLite store; only Discord is faked."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from cogs.settings import PRESET_CHOICES, SettingsCog, setup
from cogs.utils.confirm import ConfirmView
from core.config import Config, LimitsConfig
from core.settings import FIELDS, PRESETS, DecodingSettings
from store import LIMIT_FIELDS, Scope, SqlitePreferencesStore
from tests.discord_fakes import FakeInteraction

USER, OTHER, GUILD = 1001, 2002, 555
CAP = 300


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[commands.Bot]:
    """A real `commands.Bot` (never logged in) holding a real store, as bot.py builds it."""
    config = Config(limits=LimitsConfig(max_new_tokens=CAP), defaults=DecodingSettings(temperature=0.9))
    bot = commands.Bot(command_prefix=commands.when_mentioned, intents=discord.Intents(guilds=True))
    bot.config = config
    bot.preferences = await SqlitePreferencesStore.open(
        tmp_path / "prefs.db", config_defaults=config.defaults, max_new_tokens_cap=CAP
    )
    yield bot
    await bot.preferences.close()


@pytest.fixture
async def cog(bot: commands.Bot) -> SettingsCog:
    await setup(bot)
    return bot.get_cog("SettingsCog")


@pytest.fixture
def store(bot: commands.Bot) -> SqlitePreferencesStore:
    return bot.preferences


def member(user_id: int = USER, *, manage_guild: bool = False, guild_id: int | None = GUILD) -> FakeInteraction:
    return FakeInteraction(user_id, guild_id, manage_guild=manage_guild)


def admin(user_id: int = USER) -> FakeInteraction:
    return member(user_id, manage_guild=True)


def assert_private(interaction: FakeInteraction) -> None:
    """Every reply is ephemeral (edits of an ephemeral message stay so) and pings nobody."""
    assert interaction.calls, "the command did not answer"
    for call in interaction.calls:
        if call.name in ("send_message", "followup"):
            assert call.kwargs.get("ephemeral") is True, call
        assert pings_nobody(call.kwargs.get("allowed_mentions")), call


def pings_nobody(allowed: discord.AllowedMentions | None) -> bool:
    return allowed is not None and allowed.to_dict() == discord.AllowedMentions.none().to_dict()


def reply(interaction: FakeInteraction) -> str:
    assert_private(interaction)
    return interaction.last_text()


def view_of(interaction: FakeInteraction) -> ConfirmView:
    return interaction.named("send_message")[-1].kwargs["view"]


# Registration: the options come from the settings type


def options_of(command: app_commands.Command) -> dict[str, app_commands.Parameter]:
    return {parameter.name: parameter for parameter in command.parameters}


async def test_setup_registers_both_groups_with_their_subcommands(cog: SettingsCog, bot: commands.Bot) -> None:
    """`/settings` and `/server-settings` are in the tree with every subcommand."""
    names = {command.qualified_name for command in bot.tree.walk_commands()}
    assert {"settings show", "settings set", "settings preset", "settings reset"} <= names
    assert {"server-settings " + n for n in ("show", "set", "preset", "limit", "reset")} <= names


@pytest.mark.parametrize("command_name", ["settings_set", "server_set"])
async def test_set_has_one_option_per_setting_with_the_types_ranges(cog: SettingsCog, command_name: str) -> None:
    """Each option's range or choices are the settings type's (length: the bot's cap), so Discord's
    client enforces them."""
    options = options_of(getattr(cog, command_name))
    assert list(options) == list(FIELDS)
    for name, spec in FIELDS.items():
        option = options[name]
        assert not option.required
        assert 0 < len(option.description) <= 100
        if spec.choices is not None:
            assert [choice.value for choice in option.choices] == list(spec.choices)
        else:
            maximum = min(spec.maximum, CAP) if name == "max_new_tokens" else spec.maximum  # the bot's cap
            assert (option.min_value, option.max_value) == (spec.minimum, maximum)
            expected = discord.AppCommandOptionType.integer if spec.kind is int else discord.AppCommandOptionType.number
            assert option.type == expected


async def test_limit_has_an_option_per_limitable_setting(cog: SettingsCog) -> None:
    """Servers can cap exactly the limitable settings, within their ranges."""
    options = options_of(cog.server_limit)
    assert list(options) == list(LIMIT_FIELDS)
    assert options["max_new_tokens"].max_value == CAP


async def test_presets_are_offered_with_a_one_line_description(cog: SettingsCog) -> None:
    """Each preset is a choice whose name carries its description, within Discord's 100 characters."""
    assert [choice.value for choice in PRESET_CHOICES] == list(PRESETS)
    for choice in PRESET_CHOICES:
        assert len(choice.name) <= 100
        assert PRESETS[choice.value].description[:40] in choice.name


async def test_server_group_is_hidden_from_members_without_manage_server(cog: SettingsCog) -> None:
    """Registration asks Discord to show it only to Manage Server, and never in DMs."""
    payload = cog.server_settings.to_dict(cog.bot.tree)
    assert int(payload["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
    assert cog.server_settings.guild_only


# /settings show


async def test_show_lists_every_setting_with_its_source(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """Each field appears with its value and where it comes from."""
    await store.set(Scope.SERVER, GUILD, {"top_k": 5})
    await store.set(Scope.USER, USER, {"top_p": 0.9})
    interaction = member()
    await cog.settings_show.callback(cog, interaction)
    text = reply(interaction)
    for name in FIELDS:
        assert f"`{name}`" in text
    assert "`temperature` **0.9** — bot default" in text
    assert "`top_k` **5** — server default" in text
    assert "`top_p` **0.9** — yours" in text
    assert f"`repetition_penalty` **{FIELDS['repetition_penalty'].default}** — built-in default" in text
    assert "`seed` **random**" in text


async def test_show_marks_a_capped_value_and_the_limits_in_force(
    cog: SettingsCog, store: SqlitePreferencesStore
) -> None:
    """A value lowered by a limit shows both numbers and who set the limit."""
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 100})
    await store.set(Scope.USER, USER, {"max_new_tokens": 250})
    interaction = member()
    await cog.settings_show.callback(cog, interaction)
    text = reply(interaction)
    assert "`max_new_tokens` **100** — yours, 250 capped by this server's limit" in text
    assert "Limits here: `max_new_tokens` ≤ 100 (this server's limit)" in text


async def test_show_in_dms_ignores_servers(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """In DMs there is no server layer."""
    await store.set(Scope.SERVER, GUILD, {"top_k": 5})
    interaction = member(guild_id=None)
    await cog.settings_show.callback(cog, interaction)
    assert "in DMs" in reply(interaction)
    assert "`top_k` **40** — built-in default" in reply(interaction)


# /settings set


async def test_set_saves_the_given_values_and_says_so(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """Only the options given are saved; the reply lists them."""
    interaction = member()
    await cog.settings_set.callback(cog, interaction, temperature=0.5, top_k=10)
    assert await store.get(Scope.USER, USER) == {"temperature": 0.5, "top_k": 10}
    assert "Saved for you: `temperature` 0.5, `top_k` 10." in reply(interaction)


async def test_set_without_options_asks_for_one(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """An empty /settings set is an error with an example, and saves nothing."""
    interaction = member()
    await cog.settings_set.callback(cog, interaction)
    assert "Give at least one setting" in reply(interaction)
    assert await store.get(Scope.USER, USER) == {}


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("temperature", math.nan, "a number from 0.05 to 2.0"),
        ("temperature", math.inf, "a number from 0.05 to 2.0"),
        ("top_k", -1, "a whole number from 0 to 500"),
        ("top_k", "10", "a whole number from 0 to 500"),
        ("num_beams", 10**20, "a whole number from 2 to 8"),
        ("strategy", "fastest", "one of `greedy`, `beam`, `sampling`"),
        ("max_new_tokens", 1000, f"a whole number from 1 to {CAP} (the bot's limit)"),
        ("seed", 2**40, "a whole number from 0 to 2147483647"),
    ],
)
async def test_set_with_a_bad_value_names_the_setting_and_range_and_saves_nothing(
    cog: SettingsCog, store: SqlitePreferencesStore, name: str, value: Any, allowed: str
) -> None:
    """What a modified client sends past Discord's checks is refused privately; nothing is saved."""
    await store.set(Scope.USER, USER, {"top_p": 0.9})
    interaction = member()
    await cog.settings_set.callback(cog, interaction, **{name: value, "top_p": 0.5})
    text = reply(interaction)
    assert f"`{name}`" in text and allowed in text
    assert "Nothing was saved." in text
    assert await store.get(Scope.USER, USER) == {"top_p": 0.9}


async def test_set_above_a_server_limit_saves_and_warns(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """The value is kept for other servers; the reply says it is capped here."""
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 100})
    interaction = member()
    await cog.settings_set.callback(cog, interaction, max_new_tokens=250)
    assert await store.get(Scope.USER, USER) == {"max_new_tokens": 250}
    assert "here `max_new_tokens` is capped to 100 by this server's limit" in reply(interaction)


async def test_set_of_a_setting_the_strategy_ignores_says_so(cog: SettingsCog) -> None:
    """Setting num_beams while sampling is allowed, with a hint that it has no effect yet."""
    interaction = member()
    await cog.settings_set.callback(cog, interaction, num_beams=5)
    assert "the sampling strategy does not use `num_beams`" in reply(interaction)


# /settings preset


@pytest.mark.parametrize("name", list(PRESETS))
async def test_preset_saves_its_values(cog: SettingsCog, store: SqlitePreferencesStore, name: str) -> None:
    """Each preset writes exactly its own values and keeps the user's others."""
    await store.set(Scope.USER, USER, {"max_new_tokens": 77})
    interaction = member()
    await cog.settings_preset.callback(cog, interaction, name=name)
    assert await store.get(Scope.USER, USER) == {"max_new_tokens": 77, **PRESETS[name].values}
    assert f"Preset **{name}**" in reply(interaction)
    resolved = await store.resolve(USER, GUILD)
    assert resolved.settings.strategy == PRESETS[name].values["strategy"]


async def test_an_unknown_preset_from_a_modified_client_is_refused(
    cog: SettingsCog, store: SqlitePreferencesStore
) -> None:
    """The choices are client-side only; the handler checks again."""
    interaction = member()
    await cog.settings_preset.callback(cog, interaction, name="turbo")
    assert "There is no preset `turbo`" in reply(interaction)
    assert await store.get(Scope.USER, USER) == {}


# /settings reset


async def test_reset_one_setting_forgets_it_and_shows_the_new_value(
    cog: SettingsCog, store: SqlitePreferencesStore
) -> None:
    """The value goes back to the layer below, and the reply says which."""
    await store.set(Scope.USER, USER, {"temperature": 0.5, "top_k": 3})
    interaction = member()
    await cog.settings_reset.callback(cog, interaction, setting="temperature")
    assert await store.get(Scope.USER, USER) == {"top_k": 3}
    assert "Forgot your `temperature`; it is now 0.9 (bot default)." in reply(interaction)


async def test_reset_of_a_setting_never_set_says_nothing_changed(cog: SettingsCog) -> None:
    """No error, just the truth."""
    interaction = member()
    await cog.settings_reset.callback(cog, interaction, setting="top_k")
    assert "`top_k` was not set, so nothing changed" in reply(interaction)


async def test_reset_of_an_unknown_setting_from_a_modified_client_is_refused(cog: SettingsCog) -> None:
    """The choices are client-side only; the store names the settings that exist."""
    interaction = member()
    await cog.settings_reset.callback(cog, interaction, setting="colour")
    assert "`colour`: there is no such setting" in reply(interaction)


async def test_server_reset_with_an_unknown_part_is_refused(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """A `part` outside its choices resets nothing, rather than guessing."""
    await store.set(Scope.SERVER, GUILD, {"top_k": 5})
    interaction = admin()
    await cog.server_reset.callback(cog, interaction, part="everything")
    assert "`part` must be one of `defaults`, `limits`" in reply(interaction)
    assert await store.get(Scope.SERVER, GUILD) == {"top_k": 5}


async def test_reset_all_asks_first_and_confirming_resets(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """Reset-all sends a private confirm; nothing changes until the owner confirms."""
    await store.set(Scope.USER, USER, {"temperature": 0.5, "top_k": 3})
    interaction = member()
    await cog.settings_reset.callback(cog, interaction)
    assert "Reset **all** your settings" in reply(interaction)
    assert await store.get(Scope.USER, USER) != {}

    press = member()
    await view_of(interaction).confirm.callback(press)
    assert await store.get(Scope.USER, USER) == {}
    (edit,) = press.named("edit_message")
    assert edit.kwargs["content"] == "All your settings are back to the defaults."
    assert edit.kwargs["view"] is None


async def test_reset_all_cancelled_changes_nothing(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """Cancel removes the buttons and keeps every value."""
    await store.set(Scope.USER, USER, {"top_k": 3})
    interaction = member()
    await cog.settings_reset.callback(cog, interaction)
    press = member()
    await view_of(interaction).cancel.callback(press)
    assert await store.get(Scope.USER, USER) == {"top_k": 3}
    assert "Nothing was changed" in press.named("edit_message")[0].kwargs["content"]


async def test_only_the_person_who_asked_can_press_the_confirm(cog: SettingsCog) -> None:
    """Another user's press is refused privately by `interaction_check`."""
    interaction = member()
    await cog.settings_reset.callback(cog, interaction)
    view = view_of(interaction)
    stranger = member(OTHER)
    assert await view.interaction_check(stranger) is False
    assert "Only the person who asked" in reply(stranger)
    assert await view.interaction_check(member()) is True


async def test_a_second_quick_press_is_acknowledged_without_acting_twice(cog: SettingsCog) -> None:
    """Two presses before the message updates: the second gets a silent acknowledgement."""
    interaction = member()
    await cog.settings_reset.callback(cog, interaction)
    view = view_of(interaction)
    await view.confirm.callback(member())
    late = member()
    await view.confirm.callback(late)
    assert [call.name for call in late.calls] == ["defer"]


async def test_reset_all_timing_out_edits_the_prompt(cog: SettingsCog) -> None:
    """No answer within the timeout: the buttons go and the message says nothing changed."""
    interaction = member()
    await cog.settings_reset.callback(cog, interaction)
    await view_of(interaction).on_timeout()
    (edit,) = interaction.named("edit_original")
    assert (edit.kwargs["content"], edit.kwargs["view"]) == ("No answer, so nothing was changed.", None)
    assert pings_nobody(edit.kwargs["allowed_mentions"])


# /server-settings: the permission is checked inside every handler

SERVER_CALLS: dict[str, dict[str, Any]] = {
    "server_show": {},
    "server_set": {"temperature": 0.5},
    "server_preset": {"name": "precise"},
    "server_limit": {"max_new_tokens": 100},
    "server_reset": {"setting": "temperature"},
}


@pytest.mark.parametrize("command_name", list(SERVER_CALLS))
async def test_server_commands_politely_refuse_members_without_manage_server(
    cog: SettingsCog, store: SqlitePreferencesStore, command_name: str
) -> None:
    """Even if Discord's default permission was overridden, the handler refuses and saves nothing."""
    await store.set(Scope.SERVER, GUILD, {"temperature": 1.5})
    interaction = member()
    await getattr(cog, command_name).callback(cog, interaction, **SERVER_CALLS[command_name])
    assert "Only members with the **Manage Server** permission" in reply(interaction)
    assert await store.get(Scope.SERVER, GUILD) == {"temperature": 1.5}
    assert await store.get(Scope.SERVER_LIMIT, GUILD) == {}


@pytest.mark.parametrize("command_name", list(SERVER_CALLS))
async def test_server_commands_in_dms_explain_they_need_a_server(cog: SettingsCog, command_name: str) -> None:
    """guild_only hides them in DMs; a modified client still gets a message."""
    interaction = member(manage_guild=True, guild_id=None)
    await getattr(cog, command_name).callback(cog, interaction, **SERVER_CALLS[command_name])
    assert "exist only inside a server" in reply(interaction)


async def test_server_set_saves_defaults_that_members_then_get(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """A server default reaches members who have not chosen that setting."""
    interaction = admin()
    await cog.server_set.callback(cog, interaction, top_k=12)
    assert "Saved as this server's defaults: `top_k` 12." in reply(interaction)
    resolved = await store.resolve(OTHER, GUILD)
    assert (resolved.settings.top_k, resolved.sources["top_k"]) == (12, "server")


async def test_server_set_above_the_servers_limit_is_refused(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """Inconsistent with the server's own limit: an error naming the range, nothing saved."""
    await store.set(Scope.SERVER_LIMIT, GUILD, {"num_beams": 3})
    interaction = admin()
    await cog.server_set.callback(cog, interaction, num_beams=6)
    assert "`num_beams`: must be a whole number from 2 to 3 (this server's limit)" in reply(interaction)
    assert await store.get(Scope.SERVER, GUILD) == {}


async def test_server_preset_saves_the_presets_values_as_defaults(
    cog: SettingsCog, store: SqlitePreferencesStore
) -> None:
    """Presets work for servers too."""
    interaction = admin()
    await cog.server_preset.callback(cog, interaction, name="creative")
    assert await store.get(Scope.SERVER, GUILD) == dict(PRESETS["creative"].values)


async def test_server_limit_caps_members_and_reports_a_capped_default(
    cog: SettingsCog, store: SqlitePreferencesStore
) -> None:
    """A new limit below the server's default is saved and the reply says the default is capped."""
    await store.set(Scope.SERVER, GUILD, {"max_new_tokens": 250})
    await store.set(Scope.USER, OTHER, {"max_new_tokens": 280})
    interaction = admin()
    await cog.server_limit.callback(cog, interaction, max_new_tokens=200)
    text = reply(interaction)
    assert "New limits for this server: `max_new_tokens` 200." in text
    assert "the default `max_new_tokens` 250 is now capped to 200" in text
    resolved = await store.resolve(OTHER, GUILD)
    assert resolved.settings.max_new_tokens == 200
    assert resolved.notes == ("`max_new_tokens` 280 was capped to 200 by this server's limit.",)


async def test_server_limit_above_the_bots_cap_is_refused(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """A server cannot allow more than the bot does."""
    interaction = admin()
    await cog.server_limit.callback(cog, interaction, max_new_tokens=CAP + 1)
    assert f"from 1 to {CAP} (the bot's limit)" in reply(interaction)
    assert await store.get(Scope.SERVER_LIMIT, GUILD) == {}


async def test_server_show_lists_defaults_and_limits(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """Admins see the server's defaults with sources, and its limits."""
    await store.set(Scope.SERVER, GUILD, {"top_k": 5})
    await store.set(Scope.SERVER_LIMIT, GUILD, {"num_beams": 3})
    interaction = admin()
    await cog.server_show.callback(cog, interaction)
    text = reply(interaction)
    assert "`top_k` **5** — server default" in text
    assert "`num_beams` ≤ 3 (this server's limit)" in text


async def test_server_reset_of_a_limit_removes_only_the_limit(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """`part:limits` forgets the limit and keeps the default of the same setting."""
    await store.set(Scope.SERVER_LIMIT, GUILD, {"max_new_tokens": 200})
    await store.set(Scope.SERVER, GUILD, {"max_new_tokens": 150})
    interaction = admin()
    await cog.server_reset.callback(cog, interaction, setting="max_new_tokens", part="limits")
    assert await store.get(Scope.SERVER_LIMIT, GUILD) == {}
    assert await store.get(Scope.SERVER, GUILD) == {"max_new_tokens": 150}
    assert "Forgot this server's `max_new_tokens`" in reply(interaction)


async def test_server_reset_of_a_limit_that_cannot_exist_says_which_can(cog: SettingsCog) -> None:
    """top_k has no limit; the message lists the settings that do."""
    interaction = admin()
    await cog.server_reset.callback(cog, interaction, setting="top_k", part="limits")
    assert "`top_k` has no limit; limits exist for `max_new_tokens`" in reply(interaction)


async def test_server_reset_all_rechecks_the_permission_of_whoever_confirms(
    cog: SettingsCog, store: SqlitePreferencesStore
) -> None:
    """Permission lost between the question and the press: the press is refused, nothing reset."""
    await store.set(Scope.SERVER, GUILD, {"top_k": 5})
    interaction = admin()
    await cog.server_reset.callback(cog, interaction, part="defaults and limits")
    await view_of(interaction).confirm.callback(member())
    assert await store.get(Scope.SERVER, GUILD) == {"top_k": 5}

    interaction = admin()
    await cog.server_reset.callback(cog, interaction, part="defaults and limits")
    press = admin()
    await view_of(interaction).confirm.callback(press)
    assert await store.get(Scope.SERVER, GUILD) == {}
    assert press.named("edit_message")[0].kwargs["content"] == "This server's defaults and limits are reset."


# The store failing


async def test_an_unavailable_store_gives_a_private_message(cog: SettingsCog, store: SqlitePreferencesStore) -> None:
    """StoreUnavailableError reaches the user as an ephemeral reply, for reads and writes alike."""
    await store.close()
    for command, options in ((cog.settings_show, {}), (cog.settings_set, {"top_k": 3})):
        interaction = member()
        await command.callback(cog, interaction, **options)
        assert "Preferences are unavailable" in reply(interaction)


async def test_show_tells_a_member_without_manage_server_who_sets_the_server_settings(cog: SettingsCog) -> None:
    plain_member, manager = member(), admin()
    await cog.settings_show.callback(cog, plain_member)
    await cog.settings_show.callback(cog, manager)
    assert "Manage Server" in reply(plain_member) and "/server-settings" in reply(plain_member)
    assert "Manage Server" not in reply(manager)
    direct = member(guild_id=None)
    await cog.settings_show.callback(cog, direct)
    assert "Manage Server" not in reply(direct)
