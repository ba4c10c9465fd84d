"""Two bot processes, one PostgreSQL database, end to end through the stand-in (issue 29).

Shard 0 and shard 1 of 2 run as two `python bot.py` processes, each in a folder of its own (two
machines, as far as files go), both on one PostgreSQL database; the stand-in sends each guild's
events to the process of its shard, as Discord does. A user's settings saved in one guild
(through one process) apply in the other; a story written by one process goes on from its
button after that process is SIGKILLed, served by the other, which takes over shard 0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from playground.standin import ManualClock, StandInConfig
from playground.standin.client import DriverClient
from playground.standin.world import GUILD_ID, SECOND_GUILD_ID
from tests.e2e.harness import BOT_READY_TIMEOUT_S, BOT_TOKEN, BotProcess, StandInThread, bot_config, write_config
from tests.e2e.replies import PROMPT, description, eventually, finished, footer, is_finished, press, private_reply
from tests.pg_server import PostgresServer
from tests.tiny_model import build_tiny_model

USER = "bob"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2-scale"), n_positions=1024)


def shard_config(model_dir: Path, folder: Path, url: str, shard_ids: list[int] | None) -> dict[str, Any]:
    config = bot_config(model_dir, folder / "unused.db")
    config["database"] |= {"url": url, "pool_size": 3}
    config["discord"] |= {"shard_count": 2, "shard_ids": shard_ids}
    return config


def wait_for_shards(standin: StandInThread, bot: BotProcess, shards: set[int], after: int) -> None:
    """Until `bot` has identified each of `shards` (of 2) on the stand-in's gateway after event `after`."""
    deadline = time.monotonic() + BOT_READY_TIMEOUT_S

    def identified() -> set[int]:
        events = standin.standin.state.events.since(after)
        return {e.data["shard"][0] for e in events if e.kind == "gateway" and e.data["state"] == "ready"}

    while not shards <= standin.call(identified):
        if not bot.alive:
            raise RuntimeError(f"the bot exited before it connected:\n{bot.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"shards {shards} did not connect in {BOT_READY_TIMEOUT_S:g} s:\n{bot.log_tail()}")
        time.sleep(0.2)


async def story_parts(server: PostgresServer, url: str) -> list[tuple[int, str]]:
    """(story id, text) of every part, read straight from the shared database."""
    connection = await asyncpg.connect(url, password=server.password)
    try:
        return [tuple(row) for row in await connection.fetch("SELECT story_id, text FROM story_parts ORDER BY id")]
    finally:
        await connection.close()


async def test_two_processes_share_settings_and_stories_through_one_postgresql(
    postgres_server: PostgresServer, model_dir: Path, tmp_path: Path
) -> None:
    url = postgres_server.url(postgres_server.create_database())
    env = {"TALEWEAVER_DATABASE_PASSWORD": postgres_server.password}
    standin = StandInThread(StandInConfig(clock=ManualClock(), bot_token=BOT_TOKEN))
    standin.call(standin.standin.state.world.add_second_guild)
    standin.run(standin.standin.start())
    bots: dict[str, BotProcess] = {}
    try:
        for name, shard in (("a", 0), ("b", 1)):
            folder = tmp_path / name
            folder.mkdir()
            config = write_config(folder, shard_config(model_dir, folder, url, [shard]))
            bots[name] = BotProcess(config, standin.standin.api_base, folder / "bot.log", env=env)
            bots[name].start()
        wait_for_shards(standin, bots["a"], {0}, after=0)
        wait_for_shards(standin, bots["b"], {1}, after=0)

        async with DriverClient(standin.standin.api_base) as driver:
            # Saved in the second guild: shard 1, process b.
            saved = await driver.command(
                USER, "settings set", {"temperature": 1.3, "max_new_tokens": 9}, channel="annex"
            )
            assert (await private_reply(driver, saved["id"]))["content"].startswith("Saved for you")
            # Used in the first guild: shard 0, process a.
            started = await driver.command(USER, "story", {"prompt": PROMPT}, channel="general")
            story = await finished(driver, started["original_message_id"])
            assert "temperature=1.3" in footer(story) and "max_new_tokens=9" in footer(story)
            (written,) = await story_parts(postgres_server, url)

            bots["a"].kill()  # kill -9: no goodbye to Discord, nothing flushed
            mark = standin.call(lambda: standin.standin.state.events.last_seq)
            # The surviving deployment takes over shard 0: its config now names both shards, and
            # its old process (shard 1 only) stops while the new one starts.
            folder = tmp_path / "b"
            config = write_config(folder, shard_config(model_dir, folder, url, None))
            bots["b2"] = BotProcess(config, standin.standin.api_base, folder / "bot-2.log", env=env)
            bots["b2"].start()
            bots["b"].stop()
            wait_for_shards(standin, bots["b2"], {0, 1}, after=mark)

            await press(driver, USER, story, "Continue")
            continued = await eventually(
                lambda: driver.message(story["id"]),
                lambda m: m["edit_count"] > story["edit_count"] and is_finished(m),
                what="the story continued by the other process",
            )
            assert description(continued).startswith(description(story))
            assert len(description(continued)) > len(description(story))
            parts = await story_parts(postgres_server, url)
            assert parts[0] == written and len(parts) == 2 and parts[1][0] == written[0]
            assert (await driver.state())["guilds"] == [
                {"id": str(GUILD_ID), "name": "Taleweaver Playground"},
                {"id": str(SECOND_GUILD_ID), "name": "Taleweaver Annex"},
            ]
        assert standin.call(lambda: [b.to_json() for b in standin.standin.breaches()]) == []
        assert not any(postgres_server.password in bot.log() for bot in bots.values())
    finally:
        for bot in bots.values():
            bot.stop()
        standin.close()
