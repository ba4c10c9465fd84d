"""Security: whose buttons, who may change the server, where the token may never go, and no pings."""

from __future__ import annotations

from pathlib import Path

import pytest

from playground.standin.client import DriverClient
from playground.standin.world import ALICE_ID, GENERAL_CHANNEL_ID, MODERATOR_ROLE_ID
from tests.e2e.harness import BOT_TOKEN, TOKEN_SECRET_PART, BotProcess, Rig, demote, write_config
from tests.e2e.replies import (
    PROMPT,
    buttons,
    eventually,
    explained,
    finished,
    pings,
    private_reply,
    replies_to,
    story_started,
    texts,
    versions,
)

MENTIONS = f"@everyone @here <@{ALICE_ID}> <@!{ALICE_ID}> <@&{MODERATOR_ROLE_ID}> <#{GENERAL_CHANNEL_ID}> hello"
NOT_ALLOWED = "Only members with the **Manage Server** permission can change this server's settings."
REFUSED_LOGIN_TIMEOUT_S = 120.0


def leaks(text: str) -> list[str]:
    return [secret for secret in (BOT_TOKEN, TOKEN_SECRET_PART) if secret in text]


async def everything_sent(driver: DriverClient) -> list[dict]:
    """Every message the bot has sent in this run, in every channel, ephemeral ones included."""
    channels = [channel["name"] for channel in (await driver.state())["channels"]]
    return [message for channel in channels for message in await driver.messages(channel)]


async def test_only_the_requester_can_press_their_storys_buttons(driver, reader, other_reader):
    """Someone else's press is refused privately, to them only, and the story does not change."""
    story = await finished(driver, (await story_started(driver, reader, PROMPT, length=6))["original_message_id"])
    click = await driver.click(other_reader, story["id"], buttons(story)["Continue"]["custom_id"])
    reply = await private_reply(driver, click["id"])
    assert reply["content"].startswith("Only the person who asked for this story can use its buttons")
    assert reply["visible_to"] == str(click["user_id"])
    after = await driver.message(story["id"])
    assert (after["edit_count"], after["embeds"]) == (story["edit_count"], story["embeds"])


@pytest.fixture
def server_settings_shown_to_everyone(rig: Rig):
    """A server admin lets everyone use /server-settings (Integrations settings override its default permission)."""
    command = rig.standin_thread.call(lambda: rig.standin.state.commands.find("server-settings"))
    saved = command["default_member_permissions"]
    rig.standin_thread.call(lambda: command.update(default_member_permissions=None))
    yield
    rig.standin_thread.call(lambda: command.update(default_member_permissions=saved))


async def test_server_settings_are_refused_by_the_bot_itself_when_discord_shows_them_to_everyone(
    driver, reader, server_settings_shown_to_everyone
):
    """Hiding the command is not enough: the bot checks Manage Server on every use, and saves nothing."""
    interaction = await driver.command(reader, "server-settings set", {"temperature": 1.9})
    assert (await private_reply(driver, interaction["id"]))["content"].startswith(NOT_ALLOWED)
    shown = await driver.command("alice", "server-settings show")
    assert "temperature` **1.9**" not in (await private_reply(driver, shown["id"]))["content"]


async def test_server_reset_is_refused_when_the_presser_lost_manage_server_after_asking(driver, rig, moderator):
    """The permission is checked again when Reset all is pressed, not only when the command ran."""
    question = await private_reply(driver, (await driver.command(moderator, "server-settings reset"))["id"])
    rig.standin_thread.call(lambda: demote(rig.standin, moderator))
    await driver.click(moderator, question["id"], buttons(question)["Reset all"]["custom_id"])
    answered = await eventually(
        lambda: driver.message(question["id"]), lambda m: m["edit_count"] > question["edit_count"], what="answer"
    )
    assert answered["content"].startswith(NOT_ALLOWED)


async def test_prompt_full_of_mentions_never_pings_in_the_story(driver, rig, reader):
    """Every version of the story shows the mentions escaped, and every payload disabled mentions."""
    story = await finished(driver, (await story_started(driver, reader, MENTIONS, length=8))["original_message_id"])
    assert pings([story]) == []
    assert "@\u200beveryone" in texts(story)[0]
    assert [b for b in rig.breaches() if b["rule"] == "mentions"] == []


async def test_prompt_full_of_mentions_never_pings_in_the_explanation(driver, rig, reader):
    """/why shows the prompt's words in its bars: escaped too, with mentions disabled."""
    assert pings([await explained(driver, reader, MENTIONS)]) == []
    assert [b for b in rig.breaches() if b["rule"] == "mentions"] == []


async def test_mentions_in_a_refused_prompt_never_ping_in_the_private_error(driver, rig, reader):
    """A prompt over the limit is refused without echoing its mentions."""
    interaction = await story_started(driver, reader, MENTIONS * 8)
    reply = await private_reply(driver, interaction["id"])
    assert pings([reply, *await replies_to(driver, interaction["id"])]) == []


async def test_token_never_appears_in_the_bots_debug_log(driver, rig, reader):
    """After stories, an explanation, an error and a gateway resume, the DEBUG log holds no trace of the token."""
    story = await story_started(driver, reader, PROMPT, length=4)
    await finished(driver, story["original_message_id"])
    await private_reply(driver, (await story_started(driver, reader, "a" * 300))["id"])  # an error
    mark = (await driver.state())["last_event_seq"]
    await driver.reconnect_gateway()
    await driver.wait_for_event(lambda e: e["kind"] == "gateway" and e["data"]["state"] == "resumed", after=mark)
    log = rig.bot.log()
    assert "DEBUG" in log and "RESUME" in log
    assert leaks(log) == []
    print(f"\nscanned {len(log.splitlines())} lines of the bot's DEBUG log: no token")


async def test_token_never_appears_in_any_message_the_bot_sent(driver, rig, reader):
    """No version of any message of the run, public or private, holds the token."""
    await finished(driver, (await story_started(driver, reader, PROMPT, length=4))["original_message_id"])
    await private_reply(driver, (await story_started(driver, reader, "a" * 300))["id"])
    messages = await everything_sent(driver)
    shown = [versions(message) for message in messages]
    assert len(messages) >= 2
    assert leaks(repr(shown)) == []
    print(f"\nscanned {len(messages)} messages, {sum(map(len, shown))} versions: no token")


def test_refused_token_is_not_echoed_in_the_log(rig: Rig, tmp_path: Path):
    """A token Discord refuses ends the bot with a message that names the variable, not the token."""
    wrong = BOT_TOKEN.replace("SECRET", "WRONGX")
    config = rig.config | {"database": {"path": str(tmp_path / "prefs.db")}}
    bot = BotProcess(write_config(tmp_path, config), rig.api_base, tmp_path / "bot.log", token=wrong)
    bot.start()
    try:
        assert bot.wait(REFUSED_LOGIN_TIMEOUT_S) == 1
    finally:
        bot.stop()
    log = bot.log()
    assert "Discord refused the token in DISCORD_TOKEN" in log
    assert wrong not in log and "WRONGX" not in log
