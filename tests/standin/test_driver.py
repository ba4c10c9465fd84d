"""The driver API: what a person may do, what there is to read, and how to follow it live."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import discord
import pytest

from playground.standin import StandIn
from playground.standin.client import DriverClient, DriverRefused
from tests.standin.bots import ScriptedBot


async def post(driver: aiohttp.ClientSession, body: dict) -> tuple[int, dict]:
    response = await driver.post("/_playground/interactions", json=body)
    return response.status, await response.json()


async def test_state_lists_users_channels_and_the_commands_the_bot_synced(standin: StandIn, bot: ScriptedBot, driver):
    state = await (await driver.get("/_playground/state")).json()
    assert state["bot"]["connected"] is True
    assert [c["name"] for c in state["channels"]] == ["general", "stories"]
    managers = {u["name"]: u["manage_guild"] for u in state["users"]}
    assert managers == {"alice": True, "bob": False, "carol": False, "olivia": True}
    assert list(managers) == ["alice", "bob", "carol", "olivia"]
    moderators = {u["name"] for u in state["users"] if u["manage_messages"]}
    assert moderators == {"alice", "olivia"}  # alice (moderator) may delete others' stories
    pick = next(c for c in state["commands"] if c["name"] == "pick")
    count = next(o for o in pick["options"] if o["name"] == "count")
    assert (count["min_value"], count["max_value"]) == (1, 5)
    assert next(o for o in pick["options"] if o["name"] == "colour")["autocomplete"] is True


async def test_command_needing_manage_server_is_refused_to_members_without_it(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    status, body = await post(driver, {"type": "command", "user": "bob", "command": "admin"})
    assert status == 403 and "lacks the permissions /admin requires" in body["error"]
    status, body = await post(driver, {"type": "command", "user": "alice", "command": "admin", "wait": True})
    assert status == 201 and body["interaction"]["status"] == "acknowledged"


async def test_unknown_command_is_refused_with_the_registered_ones_named(standin: StandIn, bot: ScriptedBot, driver):
    status, body = await post(driver, {"type": "command", "user": "bob", "command": "nope"})
    assert status == 404 and "/act" in body["error"] and "/pick" in body["error"]


async def test_someone_elses_ephemeral_buttons_cannot_be_pressed(standin: StandIn, bot: ScriptedBot, driver):
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="Mine", custom_id="mine"))
    view.add_item(discord.ui.Button(label="Off", custom_id="off", disabled=True))
    bot.behaviour = lambda i: i.response.send_message("for bob only", view=view, ephemeral=True)
    _, body = await post(driver, {"type": "command", "user": "bob", "command": "act", "wait": True})
    message_id = body["interaction"]["original_message_id"]

    status, refused = await post(
        driver, {"type": "component", "user": "carol", "message_id": message_id, "custom_id": "mine"}
    )
    assert status == 404 and "carol cannot see" in refused["error"]
    status, refused = await post(
        driver, {"type": "component", "user": "bob", "message_id": message_id, "custom_id": "off"}
    )
    assert status == 400 and "disabled" in refused["error"]


async def test_breaches_are_listed_and_cleared_over_http(standin: StandIn, bot: ScriptedBot, driver):
    bot.behaviour = lambda i: i.response.send_message("x" * 2001)
    await post(driver, {"type": "command", "user": "bob", "command": "act"})
    await standin.wait_for_breach()
    listed = (await (await driver.get("/_playground/breaches")).json())["breaches"]
    assert [(b["rule"], b["route"].split("/")[1]) for b in listed] == [("limit", "interactions")]
    assert (await driver.delete("/_playground/breaches")).status == 204
    assert (await (await driver.get("/_playground/breaches")).json())["breaches"] == []


async def test_events_long_poll_returns_as_soon_as_something_happens(standin: StandIn, bot: ScriptedBot, driver):
    after = (await (await driver.get("/_playground/state")).json())["last_event_seq"]
    poll = asyncio.create_task(driver.get(f"/_playground/events?after={after}&timeout=10"))
    bot.behaviour = lambda i: i.response.send_message("news")
    await post(driver, {"type": "command", "user": "bob", "command": "act"})
    events = (await (await asyncio.wait_for(poll, 5)).json())["events"]
    assert events and all(event["seq"] > after for event in events)


async def test_event_stream_sends_server_sent_events(standin: StandIn, bot: ScriptedBot, driver):
    after = standin.state.events.last_seq
    async with driver.get(f"/_playground/events/stream?after={after}") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        bot.behaviour = lambda i: i.response.send_message("streamed")
        await post(driver, {"type": "command", "user": "bob", "command": "act"})
        data = None
        while data is None or data.get("content") != "streamed":
            line = (await asyncio.wait_for(stream.content.readline(), 5)).decode()
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
    assert data["author"]["username"] == "taleweaver"


async def test_web_page_is_served_at_the_root(standin: StandIn, driver):
    response = await driver.get("/")
    assert response.status == 200 and "<title>Taleweaver playground</title>" in await response.text()


async def test_driver_client_runs_a_command_and_waits_for_the_streamed_reply(standin: StandIn, bot: ScriptedBot):
    async def stream(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="half")
        await interaction.edit_original_response(content="done")

    bot.behaviour = stream
    async with DriverClient(standin.api_base) as client:
        start = (await client.state())["last_event_seq"]
        interaction = await client.command("bob", "act", {"text": "hi"})
        assert interaction["response_type"] == "deferred"
        final = await client.wait_for_message(lambda m: m["content"] == "done", after=start)
        assert final["id"] == interaction["original_message_id"] and final["edit_count"] == 2
        with pytest.raises(DriverRefused) as refused:
            await client.command("bob", "pick", {"colour": "red", "count": 9})
        assert refused.value.status == 400
        assert await client.breaches() == []
