"""The gateway: discord.py identifies over zlib-stream, and resumes its session after RECONNECT."""

from __future__ import annotations

import json

import aiohttp

from playground.standin import StandIn
from tests.standin.bots import ScriptedBot

HELLO, HEARTBEAT, HEARTBEAT_ACK, RESUME, INVALID_SESSION, IDENTIFY = 10, 1, 11, 6, 9, 2


async def test_discordpy_identifies_over_a_zlib_stream(standin: StandIn, bot: ScriptedBot):
    ready = await standin.wait_for(lambda e: e.kind == "gateway" and e.data["state"] == "ready")
    assert ready.data["compression"] == "zlib-stream"
    assert bot.user is not None and bot.user.id == standin.state.world.bot.id
    assert [guild.name for guild in bot.guilds] == ["Taleweaver Playground"]
    assert [channel.name for channel in bot.guilds[0].text_channels] == ["general", "stories"]


async def test_bot_resumes_after_reconnect_and_still_gets_interactions(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    first = await standin.wait_for(lambda e: e.kind == "gateway" and e.data["state"] == "ready")
    response = await driver.post("/_playground/gateway/reconnect")
    assert (await response.json())["connections"] == 1
    resumed = await standin.wait_for(lambda e: e.kind == "gateway" and e.data["state"] == "resumed", after=first.seq)
    assert resumed.data["session_id"] == first.data["session_id"]

    bot.behaviour = lambda i: i.response.send_message("still here")
    await driver.post("/_playground/interactions", json={"type": "command", "user": "bob", "command": "act"})
    await standin.wait_for(lambda e: e.kind == "message_create" and e.data["content"] == "still here")
    assert standin.breaches() == []


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict:
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def test_plain_text_gateway_answers_heartbeats(standin: StandIn):
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{standin.state.hub.url}?v=10") as ws:
        hello = await _receive(ws)
        assert hello["op"] == HELLO and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": HEARTBEAT, "d": None})
        assert (await _receive(ws))["op"] == HEARTBEAT_ACK


async def test_resume_of_an_unknown_session_is_invalidated(standin: StandIn):
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{standin.state.hub.url}?v=10") as ws:
        await _receive(ws)
        await ws.send_json({"op": RESUME, "d": {"token": "t", "session_id": "nope", "seq": 3}})
        invalid = await _receive(ws)
        assert invalid == {"op": INVALID_SESSION, "d": False, "s": None, "t": None}


async def test_resume_replays_the_events_missed_while_away(standin: StandIn):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{standin.state.hub.url}?v=10") as ws:
            await _receive(ws)
            await ws.send_json({"op": IDENTIFY, "d": {"token": "t", "intents": 1, "properties": {}}})
            ready = await _receive(ws)
            assert ready["t"] == "READY" and (await _receive(ws))["t"] == "GUILD_CREATE"
            await ws.close(code=4000)
        await standin.wait_for(lambda e: e.kind == "gateway" and e.data["state"] == "disconnected")
        await standin.state.hub.dispatch("INTERACTION_CREATE", {"id": "1"})
        async with session.ws_connect(f"{standin.state.hub.url}?v=10") as ws:
            await _receive(ws)
            resume = {"token": "t", "session_id": ready["d"]["session_id"], "seq": 2}
            await ws.send_json({"op": RESUME, "d": resume})
            missed, resumed = await _receive(ws), await _receive(ws)
            assert (missed["t"], missed["s"], resumed["t"]) == ("INTERACTION_CREATE", 3, "RESUMED")


async def test_interactions_are_refused_while_the_bot_is_disconnected(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    await bot.close()
    await standin.wait_for(lambda e: e.kind == "gateway" and e.data["state"] in ("disconnected", "ended"))
    response = await driver.post("/_playground/interactions", json={"type": "command", "user": "bob", "command": "act"})
    assert response.status == 503
    assert "not connected" in (await response.json())["error"]
