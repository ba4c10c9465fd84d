"""Fixtures of the end-to-end tests: one stand-in and one real bot process for all of tests/e2e.

Tests stay independent by acting as people no other test acts as (`reader`, `moderator`), and
every test must leave the stand-in without a single breach of Discord's rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from playground.standin.client import DriverClient
from tests.e2e.harness import Rig, start_rig, stop_rig
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def e2e_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with a 1024-token context, so a story can run long enough to be stopped or outlive a reconnect."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2-1024"), n_positions=1024)


@pytest.fixture(scope="package")
def rig(e2e_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The stand-in and `python bot.py` on the tiny model, connected and with its commands synced."""
    running = start_rig(e2e_model_dir, tmp_path_factory.mktemp("e2e"))
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
    """A person with Manage Server (the Moderator role) whom no other test acts as."""
    return rig.new_moderator()
