"""Faults: the gateway drops or moves mid-story, an interaction token runs out, the bot restarts."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import pytest

from playground.standin.client import DriverClient
from tests.e2e.harness import Rig
from tests.e2e.replies import (
    LONG_STORY,
    PROMPT,
    buttons,
    description,
    eventually,
    finished,
    is_finished,
    private_replies,
    running,
    story_started,
    tokens_written,
)

TOKEN_LIFETIME_S = 15 * 60


def gateway_event(state: str):
    return lambda event: event["kind"] == "gateway" and event["data"]["state"] == state


def drop_gateway(rig: Rig) -> None:
    """Cut the bot's gateway connection without a closing handshake, as a network fault would."""

    def cut() -> None:
        session = rig.standin.state.hub.current
        assert session is not None and session.connection is not None
        session.connection.ws.get_extra_info("socket").shutdown(socket.SHUT_RDWR)

    rig.standin_thread.call(cut)


async def finish_event(driver: DriverClient, message_id: str, after: int) -> dict:
    """The event that showed the story finished (it has a sequence number to compare with others)."""
    return await driver.wait_for_event(
        lambda e: e["kind"] == "message_update" and e["data"]["id"] == message_id and is_finished(e["data"]),
        after=after,
        timeout=60,
    )


async def test_story_in_flight_completes_across_a_gateway_reconnect(driver, reader):
    """Discord asks the bot to reconnect (op 7) mid-story; the bot resumes and the story is written to its end."""
    story = await story_started(driver, reader, PROMPT, **LONG_STORY)
    await running(driver, story["original_message_id"])
    mark = (await driver.state())["last_event_seq"]
    assert await driver.reconnect_gateway() == 1
    resumed = await driver.wait_for_event(gateway_event("resumed"), after=mark, timeout=30)
    done = await finish_event(driver, story["original_message_id"], mark)
    assert done["seq"] > resumed["seq"], "the story ended before the reconnect, so this proves nothing"
    assert tokens_written(done["data"]) == LONG_STORY["length"]


async def test_story_in_flight_completes_after_the_gateway_connection_drops(driver, rig, reader):
    """The gateway connection is closed under the bot mid-story; it resumes and the story is written to its end."""
    story = await story_started(driver, reader, PROMPT, **LONG_STORY)
    await running(driver, story["original_message_id"])
    mark = (await driver.state())["last_event_seq"]
    drop_gateway(rig)
    await driver.wait_for_event(gateway_event("disconnected"), after=mark, timeout=10)
    resumed = await driver.wait_for_event(gateway_event("resumed"), after=mark, timeout=30)
    done = await finish_event(driver, story["original_message_id"], mark)
    assert done["seq"] > resumed["seq"], "the story ended before the drop, so this proves nothing"
    assert tokens_written(done["data"]) == LONG_STORY["length"]


async def test_bot_answers_new_commands_after_its_gateway_connection_drops(driver, rig, reader):
    """Once resumed, the bot receives and answers interactions again."""
    mark = (await driver.state())["last_event_seq"]
    drop_gateway(rig)
    await driver.wait_for_event(gateway_event("resumed"), after=mark, timeout=30)
    interaction = await driver.command(reader, "settings show")
    assert interaction["status"] == "acknowledged"


async def test_continue_after_fifteen_minutes_writes_through_the_new_token_without_error(driver, rig, reader):
    """The /story token has expired; Continue must edit with its own interaction, and no error reaches anyone."""
    before = await finished(
        driver, (await story_started(driver, reader, PROMPT, strategy="greedy", length=6))["original_message_id"]
    )
    rig.clock.advance(TOKEN_LIFETIME_S + 1)
    click = await driver.click(reader, before["id"], buttons(before)["Continue"]["custom_id"])
    after = await eventually(
        lambda: driver.message(before["id"]),
        lambda m: m["edit_count"] > before["edit_count"] and is_finished(m),
        what="continued story",
    )
    assert description(after).startswith(description(before)) and len(description(after)) > len(description(before))
    assert await private_replies(driver, click["id"]) == []
    assert [b for b in rig.breaches() if b["rule"] == "token_expired"] == []


@dataclass
class BeforeRestart:
    settings_user: str
    story_user: str
    story: dict
    second_story: dict | None = None
    """Another finished story of `story_user`, whose buttons others press after the restart."""


async def prepare_restart(rig: Rig) -> BeforeRestart:
    """A saved setting and a finished story, made before the bot restarts."""
    settings_user, story_user = rig.new_reader(), rig.new_reader()
    async with DriverClient(rig.api_base) as driver:
        await driver.command(settings_user, "settings set", {"temperature": 1.7})
        interaction = await story_started(driver, story_user, PROMPT, length=6)
        story = await finished(driver, interaction["original_message_id"])
        second = await story_started(driver, story_user, PROMPT, length=6)
        second_story = await finished(driver, second["original_message_id"])
    return BeforeRestart(settings_user, story_user, story, second_story)


@pytest.fixture(scope="module")
def restarted(rig: Rig) -> BeforeRestart:
    """What was there before the bot process was killed and started again on the same database."""
    before = asyncio.run(prepare_restart(rig))
    rig.restart_bot()
    return before


async def test_saved_settings_survive_a_restart_of_the_bot(driver, restarted):
    """Settings are kept in the database, not in the process."""
    interaction = await driver.command(restarted.settings_user, "settings show")
    (reply,) = await private_replies(driver, interaction["id"])
    assert "• `temperature` **1.7** — yours" in reply["content"]


async def test_continue_after_a_restart_goes_on_with_the_story(driver, restarted):
    """Buttons carry the story id and the story is in the database: Continue works after a restart."""
    story = restarted.story
    click = await driver.click(restarted.story_user, story["id"], buttons(story)["Continue"]["custom_id"])
    assert (click["status"], click["response_type"]) == ("acknowledged", "deferred_update")
    after = await eventually(
        lambda: driver.message(story["id"]),
        lambda m: m["edit_count"] > story["edit_count"] and is_finished(m),
        what="continued story",
    )
    assert description(after).startswith(description(story)) and len(description(after)) > len(description(story))
    assert await private_replies(driver, click["id"]) == []


async def test_after_a_restart_only_the_owner_presses_a_storys_buttons(driver, rig, restarted):
    """Someone else pressing an older story's button is answered privately, and nothing changes."""
    story = restarted.second_story
    stranger = rig.new_reader()
    click = await driver.click(stranger, story["id"], buttons(story)["Continue"]["custom_id"])
    assert click["status"] == "acknowledged"
    assert (await private_replies(driver, click["id"]))[0]["content"].startswith("Only the person who asked")
    now = await driver.message(story["id"])
    assert buttons(now) and description(now) == description(story)
