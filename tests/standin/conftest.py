"""Fixtures: a running stand-in on a manual clock, a scripted bot connected to it, an HTTP driver session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import discord.gateway
import discord.http
import pytest

from playground.connect import point_discordpy_at
from playground.standin import ManualClock, StandIn, StandInConfig
from tests.standin.bots import ScriptedBot


@pytest.fixture
def clock() -> ManualClock:
    """The stand-in's clock for the token lifetime; the ack deadline also runs on a real timer."""
    return ManualClock()


@pytest.fixture
def ack_deadline_s() -> float:
    """Discord's 3 s; a test of the deadline itself parametrizes a shorter one."""
    return 3.0


@pytest.fixture
async def standin(clock: ManualClock, ack_deadline_s: float) -> AsyncIterator[StandIn]:
    async with StandIn(StandInConfig(ack_deadline_s=ack_deadline_s, clock=clock)) as running:
        yield running


@pytest.fixture
async def bot(standin: StandIn) -> AsyncIterator[ScriptedBot]:
    """A ScriptedBot logged in (commands synced) and identified on the stand-in's gateway."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discordpy_at(standin.api_base)
    client = ScriptedBot()
    try:
        await client.login("test-token")
        ready = standin.wait_for(lambda e: e.kind == "gateway" and e.data["state"] == "ready")
        task = asyncio.create_task(client.connect())
        await ready
        yield client
        await client.close()
        await task
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@pytest.fixture
async def driver(standin: StandIn) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session on the stand-in's base URL, for the driver API."""
    async with aiohttp.ClientSession(base_url=standin.api_base) as session:
        yield session
