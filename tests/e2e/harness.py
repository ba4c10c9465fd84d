"""The end-to-end rig: the stand-in serving from its own thread, the real bot as a child process.

The stand-in runs on a daemon thread with its own event loop, so it keeps answering the bot
whatever the test is doing (awaiting, blocking in a browser call, running its own loop), and the
test still holds its `ManualClock` and its state. The bot is `python bot.py --config …`,
unmodified, logging at DEBUG into a file the security tests read.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from playground.standin import ManualClock, StandIn, StandInConfig
from playground.standin.world import MODERATOR_ROLE_ID, Channel, Member, User

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BOT_TOKEN = "MTMwMDAwMDAwMDAwMDAwMDAwMQ.E2Etst.taleweaver-e2e-SECRET-9f8e7d6c5b4a"
"""Distinctive, so any trace of it in a log or a message is found."""
TOKEN_SECRET_PART = "taleweaver-e2e-SECRET-9f8e7d6c5b4a"
READERS = 100
"""People with no special permission, one or more per test so that per-user limits never collide."""
LOAD_USERS = 20
MODERATORS = 10
"""People with Manage Server whom a test may demote."""
LOAD_CHANNEL = Channel(1300000000000000209, "load", "The load test's flood", 2)
BOT_READY_TIMEOUT_S = 120.0


class StandInThread:
    """A `StandIn` on a daemon thread's event loop; `call` and `run` reach into it safely."""

    def __init__(self, config: StandInConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="standin", daemon=True)
        self._thread.start()
        self.standin: StandIn = self.call(lambda: StandIn(config))

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the stand-in's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def call(self, function: Callable[[], T]) -> T:
        """Run a plain function on the stand-in's loop (where its state lives) and return its result."""

        async def wrapper() -> T:
            return function()

        return self.run(wrapper())

    def close(self) -> None:
        self.run(self.standin.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def people(prefix: str, count: int, first_id: int, *, moderator: bool = False) -> list[Member]:
    roles = (MODERATOR_ROLE_ID,) if moderator else ()
    return [
        Member(User(first_id + i, f"{prefix}{i:02d}", f"{prefix.capitalize()} {i:02d}"), roles) for i in range(count)
    ]


def populate(standin: StandIn) -> None:
    """Add the test people and the load channel to the stand-in's world before the bot connects."""
    world = standin.state.world
    members = (
        people("reader", READERS, 1300000000000000500)
        + people("load", LOAD_USERS, 1300000000000000600)
        + people("mod", MODERATORS, 1300000000000000700, moderator=True)
    )
    world.members.extend(members)
    world.users.update({member.user.id: member.user for member in members})
    world.channels.append(LOAD_CHANNEL)


def demote(standin: StandIn, name: str) -> None:
    """Take every role away from `name` (as if a moderator lost Manage Server)."""
    world = standin.state.world
    user = world.find_user(name)
    world.members = [Member(m.user) if m.user.id == user.id else m for m in world.members]


def bot_config(model_dir: Path, database: Path) -> dict[str, Any]:
    """Small limits, quick edits and a short /why budget, so every test is fast on a tiny model."""
    return {
        "model": {"source": str(model_dir), "device": "cpu", "cpu_threads": 1},
        "limits": {"max_prompt_tokens": 128, "max_new_tokens": 1000},
        "service": {
            "queue_size": 12,
            "per_user_in_flight": 1,
            "per_user_per_minute": 6,
            "request_timeout_s": 30,
            "batch_window_ms": 5,
            "max_batch_size": 8,
            # Replies here are edited every 0.1 s (below): text must reach the loop more often than that.
            "stream_interval_s": 0.02,
            # The tiny random model writes byte soup and these tests count tokens: exact lengths
            # (story endings at word and sentence boundaries are tested in tests/test_endings.py).
            "whole_words": False,
            "finish_sentences": False,
        },
        "why": {"time_budget_s": 2, "max_steps": 30, "starts": 4, "samples_per_step": 1, "patience": 10},
        # A 1000-token story on the tiny model took under 0.6 s on a Zen 4 core: at 0.3 s it was
        # edited once before its end, too few to see it stream.
        "discord": {"edit_interval_s": 0.1},
        "database": {"path": str(database)},
        "defaults": {"strategy": "sampling", "max_new_tokens": 16},
        "log_level": "DEBUG",
        "ops": {"port": 0},
    }


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class BotProcess:
    """`python bot.py --config PATH` with the stand-in's address and a token; output is appended to `log_path`."""

    config_path: Path
    api_base: str
    log_path: Path
    token: str = BOT_TOKEN
    env: dict[str, str] = field(default_factory=dict)
    """More environment (the database password)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        env = (
            os.environ
            | self.env
            | {
                "DISCORD_TOKEN": self.token,
                "TALEWEAVER_DISCORD_API_BASE": self.api_base,
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "bot.py"), "--config", str(self.config_path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crash or an OOM kill would end it."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@dataclass
class Rig:
    """What the tests share: the stand-in (thread), its clock, the bot, and the people to act as."""

    standin_thread: StandInThread
    clock: ManualClock
    bot: BotProcess
    config: dict[str, Any]
    _readers: list[str] = field(default_factory=lambda: [f"reader{i:02d}" for i in range(READERS)])
    _moderators: list[str] = field(default_factory=lambda: [f"mod{i:02d}" for i in range(MODERATORS)])

    @property
    def standin(self) -> StandIn:
        return self.standin_thread.standin

    @property
    def api_base(self) -> str:
        return self.standin.api_base

    def new_reader(self) -> str:
        """A person no earlier test has acted as."""
        assert self._readers, "every reader has been used; raise READERS in tests/e2e/harness.py"
        return self._readers.pop(0)

    def new_moderator(self) -> str:
        assert self._moderators, "every moderator has been used; raise MODERATORS in tests/e2e/harness.py"
        return self._moderators.pop(0)

    def breaches(self) -> list[dict[str, Any]]:
        return self.standin_thread.call(lambda: [breach.to_json() for breach in self.standin.breaches()])

    def clear_breaches(self) -> None:
        self.standin_thread.call(self.standin.state.breaches.clear)

    def restart_bot(self) -> None:
        """Kill the bot and start it again on the same config and database, as a crash and a restart would."""
        mark = self.standin_thread.call(lambda: self.standin.state.events.last_seq)
        self.bot.stop()
        self.bot.start()
        self.wait_until_ready(after=mark)

    def wait_until_ready(self, after: int = 0) -> None:
        """Until the bot has synced its commands and identified on the gateway after event `after` (or died)."""
        deadline = time.monotonic() + BOT_READY_TIMEOUT_S
        while not self.standin_thread.call(lambda: self._identified_since(after)):
            if not self.bot.alive:
                raise RuntimeError(f"the bot exited before it connected:\n{self.bot.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not connect in {BOT_READY_TIMEOUT_S:g} s:\n{self.bot.log_tail()}")
            time.sleep(0.2)

    def _identified_since(self, after: int) -> bool:
        events = self.standin.state.events.since(after)
        return self.standin.state.hub.connected and any(
            e.kind == "gateway" and e.data["state"] == "ready" for e in events
        )


def start_rig(model_dir: Path, workdir: Path, model_url: str = "") -> Rig:
    """With `model_url`, the bot uses the model service there (Ray Serve) instead of its own model."""
    clock = ManualClock()
    standin_thread = StandInThread(StandInConfig(clock=clock, bot_token=BOT_TOKEN))
    standin_thread.call(lambda: populate(standin_thread.standin))
    standin_thread.run(standin_thread.standin.start())
    config = bot_config(model_dir, workdir / "prefs.db")
    if model_url:
        config["service"]["url"] = model_url
    bot = BotProcess(write_config(workdir, config), standin_thread.standin.api_base, workdir / "bot.log")
    rig = Rig(standin_thread, clock, bot, config)
    bot.start()
    try:
        rig.wait_until_ready()
    except BaseException:
        stop_rig(rig)
        raise
    return rig


def stop_rig(rig: Rig) -> None:
    rig.bot.stop()
    rig.standin_thread.close()
