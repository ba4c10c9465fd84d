"""A deliberately misbehaving discord.py bot: every breach of Discord's rules is caught and reported.

Each test scripts what /act does, invokes /act through the driver API, then checks the breach
log and, where Discord refuses the request, that the bot met Discord's error.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable

import aiohttp
import discord
import pytest

from playground.standin import ManualClock, StandIn
from playground.standin import breaches as rules
from tests.standin.bots import NO_MENTIONS, ScriptedBot, raw_initial_response

CHANNEL_MESSAGE = 4
Misbehaviour = Callable[[discord.Interaction], Awaitable[None]]


async def invoke_act(driver: aiohttp.ClientSession, user: str = "bob") -> dict:
    response = await driver.post("/_playground/interactions", json={"type": "command", "user": user, "command": "act"})
    assert response.status == 201, await response.text()
    return (await response.json())["interaction"]


async def bot_error(bot: ScriptedBot) -> discord.HTTPException:
    """The error the bot's command met; fails if it was not Discord's error answer."""
    await asyncio.wait_for(bot.error_seen.wait(), 5)
    error = bot.errors[0]
    assert isinstance(error, discord.HTTPException), repr(error)
    return error


async def reply(interaction: discord.Interaction, **kwargs) -> None:
    await interaction.response.send_message(**kwargs)


def embed(**kwargs) -> discord.Embed:
    return discord.Embed(**kwargs)


def view_with_custom_id(length: int) -> discord.ui.View:
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="go", custom_id="c" * length))
    return view


def raw_rows(rows: int, buttons: int) -> list[dict]:
    row = {
        "type": 1,
        "components": [{"type": 2, "style": 1, "label": "b", "custom_id": f"b{i}"} for i in range(buttons)],
    }
    return [row] * rows


MESSAGE_LIMITS: dict[str, tuple[Misbehaviour, str]] = {
    "content_over_2000_characters": (lambda i: reply(i, content="x" * 2001), "content: 2001 characters"),
    "embed_title_over_256": (lambda i: reply(i, embed=embed(title="t" * 257)), "embeds[0].title: 257"),
    "embed_description_over_4096": (lambda i: reply(i, embed=embed(description="d" * 4097)), "embeds[0].description"),
    "more_than_25_fields": (
        lambda i: reply(i, embed=_fields(embed(title="f"), 26)),
        "embeds[0].fields: 26 fields, limit 25",
    ),
    "more_than_6000_in_all_embeds": (
        lambda i: reply(i, embeds=[embed(description="d" * 4000), embed(description="d" * 2001)]),
        "embeds: 6001 characters in all embeds together",
    ),
    "more_than_10_embeds": (
        lambda i: raw_initial_response(
            i, CHANNEL_MESSAGE, {"embeds": [{"title": "t"}] * 11, "allowed_mentions": NO_MENTIONS.to_dict()}
        ),
        "embeds: 11 embeds, limit 10",
    ),
    "more_than_5_action_rows": (
        lambda i: raw_initial_response(
            i, CHANNEL_MESSAGE, {"components": raw_rows(6, 1), "allowed_mentions": NO_MENTIONS.to_dict()}
        ),
        "components: 6 action rows, limit 5",
    ),
    "more_than_5_buttons_in_a_row": (
        lambda i: raw_initial_response(
            i, CHANNEL_MESSAGE, {"components": raw_rows(1, 6), "allowed_mentions": NO_MENTIONS.to_dict()}
        ),
        "components[0].components: 6 buttons in one row, limit 5",
    ),
    "custom_id_over_100_characters": (
        lambda i: reply(i, content="pick", view=view_with_custom_id(101)),
        "components[0].components[0].custom_id: 101 characters, limit 100",
    ),
}


def _fields(target: discord.Embed, count: int) -> discord.Embed:
    for index in range(count):
        target.add_field(name=f"n{index}", value="v")
    return target


@pytest.mark.parametrize("case", list(MESSAGE_LIMITS))
async def test_message_over_a_limit_is_caught_and_refused_with_invalid_form_body(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession, case: str
):
    misbehaviour, expected = MESSAGE_LIMITS[case]
    bot.behaviour = misbehaviour
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.LIMIT)
    assert breach.detail.startswith(expected), breach.detail
    error = await bot_error(bot)
    assert (error.status, error.code) == (400, 50035)
    assert standin.messages() == []


async def test_attachment_over_10_mib_is_caught_and_refused_as_too_large(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    too_big = discord.File(io.BytesIO(b"\0" * (10 * 1024 * 1024 + 1)), "huge.png")
    bot.behaviour = lambda i: reply(i, content="a picture", file=too_big)
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.LIMIT)
    assert breach.detail == "files[0]: 'huge.png' is 10485761 bytes, limit 10485760"
    error = await bot_error(bot)
    assert (error.status, error.code) == (413, 40005)


@pytest.mark.parametrize(
    "mentions, expected",
    [
        (discord.AllowedMentions(everyone=True), "allowed_mentions.parse: ['everyone'], must be []"),
        (discord.AllowedMentions(users=True), "allowed_mentions.parse: ['users'], must be []"),
        (discord.AllowedMentions(replied_user=True), "allowed_mentions.replied_user: true, must be false"),
    ],
    ids=["everyone", "users", "replied_user"],
)
async def test_message_that_enables_mentions_is_caught_but_delivered(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession, mentions: discord.AllowedMentions, expected: str
):
    bot.behaviour = lambda i: reply(i, content="hello @everyone", allowed_mentions=mentions)
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.MENTIONS)
    assert breach.detail == expected
    assert [m.content for m in standin.messages()] == ["hello @everyone"]


async def test_message_without_allowed_mentions_is_caught(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    bot.behaviour = lambda i: raw_initial_response(i, CHANNEL_MESSAGE, {"content": "hi <@1300000000000000401>"})
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.MENTIONS)
    assert breach.detail.startswith("allowed_mentions: missing")


async def test_follow_up_edit_without_allowed_mentions_is_caught(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    async def misbehave(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        interaction.client._connection.allowed_mentions = None  # a bot with no default for its edits
        await interaction.edit_original_response(content="edited")

    bot.behaviour = misbehave
    interaction = await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.MENTIONS)
    assert breach.route.startswith("PATCH /webhooks/") and breach.route.endswith("/messages/@original")
    assert breach.interaction_id == int(interaction["id"])


@pytest.mark.parametrize("ack_deadline_s", [0.5])
async def test_no_acknowledgement_within_the_deadline_is_caught_and_a_late_answer_refused(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    may_answer = asyncio.Event()

    async def too_slow(interaction: discord.Interaction) -> None:
        await may_answer.wait()
        await interaction.response.send_message("sorry, late")

    bot.behaviour = too_slow
    interaction = await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.ACK_TIMEOUT)
    assert breach.detail == "no initial response within 0.5 s"
    assert breach.interaction_id == int(interaction["id"])
    may_answer.set()
    error = await bot_error(bot)
    assert (error.status, error.code) == (404, 10062)
    assert len(standin.breaches(rules.ACK_TIMEOUT)) == 1


async def test_second_initial_response_is_caught_and_refused(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("one")
        await raw_initial_response(interaction, CHANNEL_MESSAGE, {"content": "two", "allowed_mentions": {"parse": []}})

    bot.behaviour = twice
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.DOUBLE_RESPONSE)
    assert breach.detail == "the interaction already has its initial response (message)"
    error = await bot_error(bot)
    assert (error.status, error.code) == (400, 40060)
    assert [m.content for m in standin.messages()] == ["one"]


async def test_follow_up_after_15_minutes_is_caught_and_refused(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession, clock: ManualClock
):
    may_follow_up = asyncio.Event()

    async def follow_up_later(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("working on it")
        await may_follow_up.wait()
        await interaction.followup.send("done")

    bot.behaviour = follow_up_later
    await invoke_act(driver)
    await standin.wait_for(lambda e: e.kind == "message_create")
    clock.advance(15 * 60 + 1)
    may_follow_up.set()
    breach = await standin.wait_for_breach(rules.TOKEN_EXPIRED)
    assert breach.detail == "interaction token used 901 s after the interaction, limit 900 s"
    error = await bot_error(bot)
    assert (error.status, error.code) == (401, 50027)


async def test_follow_up_just_before_15_minutes_is_accepted(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession, clock: ManualClock
):
    may_follow_up = asyncio.Event()

    async def follow_up_later(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("working on it")
        await may_follow_up.wait()
        await interaction.followup.send("done")

    bot.behaviour = follow_up_later
    await invoke_act(driver)
    await standin.wait_for(lambda e: e.kind == "message_create")
    clock.advance(15 * 60 - 1)
    may_follow_up.set()
    await standin.wait_for(lambda e: e.kind == "message_create" and e.data["content"] == "done")
    assert standin.breaches() == []


async def test_edit_before_any_initial_response_is_caught(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    bot.behaviour = lambda i: i.edit_original_response(content="too early")
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.NOT_ACKNOWLEDGED)
    assert breach.detail == "follow-up or edit before the initial response"
    error = await bot_error(bot)
    assert (error.status, error.code) == (404, 10015)


async def test_update_in_answer_to_a_slash_command_is_caught(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    bot.behaviour = lambda i: raw_initial_response(i, 7, {"content": "update?", "allowed_mentions": {"parse": []}})
    await invoke_act(driver)
    breach = await standin.wait_for_breach(rules.INVALID_RESPONSE)
    assert breach.detail == "response type 7 is not valid for a command interaction"


async def test_update_in_answer_to_a_modal_opened_by_a_command_is_caught(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    class Ask(discord.ui.Modal, title="Ask"):
        answer = discord.ui.TextInput(label="Answer", custom_id="answer")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.edit_message(content="there is no message to edit")

    bot.behaviour = lambda i: i.response.send_modal(Ask(custom_id="ask"))
    opened = {"type": "command", "user": "bob", "command": "act", "wait": True}
    assert (await driver.post("/_playground/interactions", json=opened)).status == 201
    body = {"type": "modal", "user": "bob", "custom_id": "ask", "values": {"answer": "yes"}}
    assert (await driver.post("/_playground/interactions", json=body)).status == 201
    breach = await standin.wait_for_breach(rules.INVALID_RESPONSE)
    assert breach.detail == (
        "response type 7 is not valid for a modal interaction whose modal was not opened from a message"
    )
