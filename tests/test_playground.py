"""`python -m playground` as `make run` starts it: a bot stopped on its own is started again while the
stand-in keeps its messages, and the playground itself stops with status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from playground.standin.client import DriverClient
from tests.e2e.harness import bot_config, write_config
from tests.e2e.replies import eventually, private_reply

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


async def connected_bot(driver: DriverClient, after: int = 0) -> dict:
    """The driver's state once the bot has synced its commands and is connected (after event `after`)."""
    return await eventually(
        driver.state,
        lambda state: state["bot"]["connected"] and state["commands"] and state["last_event_seq"] > after,
        timeout=90,
        what="the bot connected",
    )


async def read_url(log: Path) -> str:
    for line in log.read_text().splitlines():
        if line.startswith("Taleweaver playground: "):
            return line.split(": ", 1)[1].strip()
    return ""


def bot_child(playground: subprocess.Popen) -> psutil.Process:
    (bot,) = [child for child in psutil.Process(playground.pid).children() if "bot.py" in " ".join(child.cmdline())]
    return bot


async def test_the_playground_restarts_a_bot_that_stops_and_keeps_its_messages(tiny_model_dir, tmp_path) -> None:
    config = write_config(tmp_path, bot_config(tiny_model_dir, tmp_path / "prefs.db"))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("DISCORD_TOKEN", None)
    command = [sys.executable, "-m", "playground", "--port", "0", "--bot-config", str(config)]
    log = tmp_path / "playground.log"
    with log.open("w") as out:  # a file, not a pipe: the bot's debug log would fill a pipe and block it
        playground = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        url = await eventually(lambda: read_url(log), bool, timeout=30, what="the playground's address")
        async with DriverClient(url) as driver:
            await connected_bot(driver)
            asked = await driver.command("bob", "help", {})
            assert "Commands" in str((await private_reply(driver, asked["id"]))["embeds"])
            bot = bot_child(playground)
            mark = (await driver.state())["last_event_seq"]
            bot.send_signal(signal.SIGTERM)
            bot.wait(30)
            assert playground.poll() is None, "the playground stopped with its bot"
            await connected_bot(driver, after=mark)
            assert bot_child(playground).pid != bot.pid
            assert (await private_reply(driver, asked["id"]))["embeds"], "the earlier reply is gone"
            again = await driver.command("bob", "help", {})
            assert (await private_reply(driver, again["id"]))["embeds"]
        playground.send_signal(signal.SIGTERM)
        assert playground.wait(30) == 0, log.read_text()
        assert "starting it again" in log.read_text()
    finally:
        if playground.poll() is None:
            playground.kill()
            playground.wait()


def test_a_bot_that_cannot_start_stops_the_playground_with_its_status(tmp_path) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text("model: {device: toaster}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "playground", "--port", "0", "--bot-config", str(broken)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "3 times" in done.stderr and "config error" in done.stderr
