"""`/settings` and `/server-settings` end to end: saved, shown, used, reset, refused."""

from __future__ import annotations

import pytest

from core.settings import PRESETS
from playground.standin.client import DriverClient, DriverRefused
from tests.e2e.replies import EPHEMERAL, buttons, finished, footer, private_reply, story_started


async def answer(driver: DriverClient, user: str, command: str, options: dict | None = None) -> dict:
    """Run a settings command and return its one private reply."""
    interaction = await driver.command(user, command, options or {})
    assert interaction["status"] == "acknowledged"
    reply = await private_reply(driver, interaction["id"])
    assert reply["visible_to"] == (await user_id(driver, user))
    return reply


async def user_id(driver: DriverClient, name: str) -> str:
    return next(u["id"] for u in (await driver.state())["users"] if u["name"] == name)


async def test_settings_set_saves_the_value_and_says_so_privately(driver, reader):
    """The reply is private and names the value saved."""
    reply = await answer(driver, reader, "settings set", {"temperature": 0.5})
    assert reply["flags"] & EPHEMERAL
    assert reply["content"].startswith("Saved for you: `temperature` 0.5.")


async def test_settings_show_lists_each_value_with_where_it_comes_from(driver, reader):
    """A saved value is marked as yours, the others as the bot's defaults."""
    await answer(driver, reader, "settings set", {"top_k": 12})
    shown = (await answer(driver, reader, "settings show"))["content"]
    assert shown.startswith("**Your settings** in this server")
    assert "• `top_k` **12** — yours" in shown
    assert "• `max_new_tokens` **16** — bot default" in shown


async def test_a_saved_setting_is_used_by_the_next_story(driver, reader):
    """/story writes with the user's saved values (its footer says so)."""
    await answer(driver, reader, "settings set", {"temperature": 1.3, "max_new_tokens": 9})
    interaction = await story_started(driver, reader, "The fox said to the crow")
    text = footer(await finished(driver, interaction["original_message_id"]))
    assert "temperature=1.3" in text and "max_new_tokens=9" in text


async def test_settings_reset_of_one_setting_returns_it_to_the_default(driver, reader):
    """The reply names the value now in force and where it comes from."""
    await answer(driver, reader, "settings set", {"temperature": 0.5})
    reply = await answer(driver, reader, "settings reset", {"setting": "temperature"})
    assert reply["content"] == "Forgot your `temperature`; it is now 0.8 (built-in default)."


async def test_settings_reset_of_everything_asks_first_then_resets(driver, reader):
    """Reset all shows Reset all / Cancel to its user only; confirming resets and says so."""
    await answer(driver, reader, "settings set", {"top_p": 0.9})
    question = await answer(driver, reader, "settings reset")
    assert "Reset **all** your settings to the defaults?" in question["content"]
    click = await driver.click(reader, question["id"], buttons(question)["Reset all"]["custom_id"])
    assert click["response_type"] == "update"
    answered = await driver.message(question["id"])
    assert (answered["content"], answered["components"]) == ("All your settings are back to the defaults.", [])
    assert "• `top_p` **1.0** — built-in default" in (await answer(driver, reader, "settings show"))["content"]


async def test_a_value_above_the_bots_cap_is_refused_by_the_client_and_nothing_is_saved(driver, rig, reader):
    """The option declares the bot's cap from config.yaml, so Discord's client refuses more before sending."""
    cap = rig.config["limits"]["max_new_tokens"]
    with pytest.raises(DriverRefused) as refused:
        await driver.command(reader, "settings set", {"max_new_tokens": cap + 1})
    assert refused.value.status == 400 and f"between 1 and {cap}" in str(refused.value)
    assert "• `max_new_tokens` **16** — bot default" in (await answer(driver, reader, "settings show"))["content"]


async def test_settings_set_with_nothing_to_set_explains_how(driver, reader):
    """Leaving every option out gets an example, not an empty save."""
    reply = await answer(driver, reader, "settings set")
    assert reply["content"].startswith("Give at least one setting to change, for example")


async def test_value_out_of_the_synced_range_never_reaches_the_bot(driver, reader):
    """The bot syncs each option's range, so Discord's client refuses what lies outside it."""
    with pytest.raises(DriverRefused) as refused:
        await driver.command(reader, "settings set", {"temperature": 5})
    assert refused.value.status == 400


async def test_server_settings_are_hidden_from_members_without_manage_server(driver, reader):
    """The bot syncs /server-settings with Manage Server as its default permission."""
    with pytest.raises(DriverRefused) as refused:
        await driver.command(reader, "server-settings show")
    assert refused.value.status == 403


@pytest.fixture
async def server_temperature_reset(driver: DriverClient):
    """Whatever the test does to the server's default temperature is undone afterwards."""
    yield
    await driver.command("alice", "server-settings reset", {"setting": "temperature"})


async def test_server_default_set_by_a_moderator_applies_to_members(
    driver, moderator, reader, server_temperature_reset
):
    """A member without their own value gets the server's default, marked as such."""
    saved = await answer(driver, moderator, "server-settings set", {"temperature": 0.6})
    assert saved["content"].startswith("Saved as this server's defaults: `temperature` 0.6.")
    shown = (await answer(driver, reader, "settings show"))["content"]
    assert "• `temperature` **0.6** — server default" in shown


async def test_server_settings_show_lists_the_servers_defaults_to_a_moderator(driver, moderator):
    """A moderator sees the server's defaults and how to change them."""
    shown = (await answer(driver, moderator, "server-settings show"))["content"]
    assert shown.startswith("**This server's defaults**")
    assert "`/server-settings set`" in shown


async def test_server_default_goes_after_reset(driver, moderator, reader, server_temperature_reset):
    """Resetting the server's temperature brings back the bot's default for members."""
    await answer(driver, moderator, "server-settings set", {"temperature": 0.6})
    await answer(driver, moderator, "server-settings reset", {"setting": "temperature"})
    shown = (await answer(driver, reader, "settings show"))["content"]
    assert "• `temperature` **0.8** — built-in default" in shown


async def test_settings_preset_saves_its_values_and_the_next_story_uses_them(driver, reader):
    """/settings preset precise switches to beam search with its values, and /story writes with them."""
    reply = await answer(driver, reader, "settings preset", {"name": "precise"})
    assert reply["content"].startswith("Preset **precise**:")
    interaction = await story_started(driver, reader, "The fox said to the crow", length=6)
    assert footer(await finished(driver, interaction["original_message_id"])).startswith(
        "beam · num_beams=4 · max_new_tokens=6 · repetition_penalty=1.0 · "
        f"no_repeat_ngram_size={PRESETS['precise'].values['no_repeat_ngram_size']}"
    )


@pytest.fixture
async def server_limits_reset(driver: DriverClient):
    """Whatever the test does to the server's max_new_tokens limit is undone afterwards."""
    yield
    await driver.command("alice", "server-settings reset", {"setting": "max_new_tokens", "part": "limits"})


async def test_server_limit_caps_a_members_story_and_tells_them(driver, moderator, reader, server_limits_reset):
    """A member asking for more tokens than the server allows gets the limit, and a note saying so."""
    saved = await answer(driver, moderator, "server-settings limit", {"max_new_tokens": 5})
    assert saved["content"].startswith("New limits for this server: `max_new_tokens` 5.")
    interaction = await story_started(driver, reader, "The fox said to the crow", length=20)
    text = footer(await finished(driver, interaction["original_message_id"]))
    assert "max_new_tokens=5" in text
    assert "\nmax_new_tokens 20 was capped to 5 by this server's limit." in text  # a footer shows no Markdown
