"""Fixtures of the end-to-end tests: one stand-in and one real bot process for all of tests/e2e.

Tests stay independent by acting as people no other test acts as (`reader`, `moderator`), and
every test must leave the stand-in without a single breach of Discord's rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.config import Config
from playground.standin.client import DriverClient
from tests.e2e.harness import Rig, bot_config, start_rig, stop_rig
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def e2e_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with a 1024-token context, so a story can run long enough to be stopped or outlive a reconnect."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2-1024"), n_positions=1024)


REMOTE_TOO = {"test_story", "test_settings", "test_why", "test_errors"}
"""Modules whose tests also run with the bot on the remote model service (Ray Serve)."""
REMOTE_ONLY = {"test_remote"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test runs on the in-process model; those of `REMOTE_TOO` also on the remote service."""
    if "rig" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    modes = (
        ["remote"] if module in REMOTE_ONLY else ["in-process", "remote"] if module in REMOTE_TOO else ["in-process"]
    )
    metafunc.parametrize("rig", modes, indirect=True, scope="package")


@pytest.fixture(scope="package")
def rig(request: pytest.FixtureRequest, e2e_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The stand-in and `python bot.py` on the tiny model, connected and with its commands synced;
    "remote": the bot reaches the model through `service.url`, two story replicas on Ray Serve."""
    url = ""
    if getattr(request, "param", "in-process") == "remote":
        cluster = request.getfixturevalue("ray_serve")
        cluster.deploy(Config.model_validate(bot_config(e2e_model_dir, Path("unused.db"))))
        url = cluster.url
    running = start_rig(e2e_model_dir, tmp_path_factory.mktemp("e2e"), model_url=url)
    yield running
    stop_rig(running)


@pytest.fixture(autouse=True)
def no_breaches(rig: Rig) -> Iterator[None]:
    """Each test starts with a live bot and a clean breach log, and must end without a breach."""
    assert rig.bot.alive, f"the bot has exited:\n{rig.bot.log_tail()}"
    rig.clear_breaches()
    yield
    assert rig.breaches() == []


@pytest.fixture
async def driver(rig: Rig) -> AsyncIterator[DriverClient]:
    async with DriverClient(rig.api_base) as client:
        yield client


@pytest.fixture
def reader(rig: Rig) -> str:
    """A person without Manage Server whom no other test acts as."""
    return rig.new_reader()


@pytest.fixture
def other_reader(rig: Rig) -> str:
    """A second such person, for tests of what one user may do to another's story."""
    return rig.new_reader()


@pytest.fixture
def moderator(rig: Rig) -> str:
    """A person with Manage Server and Manage Messages (the Moderator role) whom no other test acts as."""
    return rig.new_moderator()
