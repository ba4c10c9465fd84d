"""Shards: with two guilds and a bot split in two processes (shard 0 and shard 1 of 2), each guild's
events reach only the process running its shard, `(guild_id >> 22) % shard_count`, as on Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest

from playground.connect import point_discordpy_at
from playground.standin import StandIn
from playground.standin.world import GUILD_ID, SECOND_GUILD_ID, shard_of
from tests.standin.bots import ScriptedBot


def test_the_two_guilds_lie_on_different_shards_of_two() -> None:
    assert (shard_of(GUILD_ID, 2), shard_of(SECOND_GUILD_ID, 2)) == (0, 1)


@pytest.fixture
async def shards(standin: StandIn) -> AsyncIterator[list[ScriptedBot]]:
    """Shard 0 and shard 1 of 2, each its own discord.py client, both identified."""
    standin.state.world.add_second_guild()
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discordpy_at(standin.api_base)
    bots = [ScriptedBot(shard_id=shard, shard_count=2) for shard in (0, 1)]
    tasks = []
    try:
        for shard, client in enumerate(bots):
            await client.login("test-token")
            ready = standin.wait_for(lambda e, s=shard: e.kind == "gateway" and e.data.get("shard") == [s, 2])
            tasks.append(asyncio.create_task(client.connect()))
            await ready
            await client.wait_until_ready()
        yield bots
    finally:
        for client in bots:
            await client.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


async def test_each_shard_is_given_only_its_own_guild(shards: list[ScriptedBot]) -> None:
    assert [[guild.id for guild in client.guilds] for client in shards] == [[GUILD_ID], [SECOND_GUILD_ID]]
    assert [channel.name for channel in shards[1].guilds[0].text_channels] == ["annex"]


async def test_a_guilds_interactions_reach_only_the_process_of_its_shard(
    standin: StandIn, shards: list[ScriptedBot], driver: aiohttp.ClientSession
) -> None:
    for shard, client in enumerate(shards):
        client.behaviour = lambda interaction, shard=shard: interaction.response.send_message(
            f"shard {shard} in {interaction.guild_id}"
        )
    for channel, expected in (("general", f"shard 0 in {GUILD_ID}"), ("annex", f"shard 1 in {SECOND_GUILD_ID}")):
        response = await driver.post(
            "/_playground/interactions", json={"type": "command", "user": "bob", "channel": channel, "command": "act"}
        )
        assert response.status == 201
        await standin.wait_for(lambda e, text=expected: e.kind == "message_create" and e.data["content"] == text)
    assert standin.breaches() == []


async def test_a_guild_whose_shard_has_no_process_is_refused(
    standin: StandIn, shards: list[ScriptedBot], driver: aiohttp.ClientSession
) -> None:
    """Shard 1's process gone: the annex gets no one (Discord's client would say the app did not
    respond), while the first guild is still served."""
    await shards[1].close()
    response = await driver.post(
        "/_playground/interactions", json={"type": "command", "user": "bob", "channel": "annex", "command": "act"}
    )
    assert response.status == 503
    shards[0].behaviour = lambda interaction: interaction.response.send_message("still here")
    await driver.post("/_playground/interactions", json={"type": "command", "user": "bob", "command": "act"})
    await standin.wait_for(lambda e: e.kind == "message_create" and e.data["content"] == "still here")
