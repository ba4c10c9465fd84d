"""A user's mistakes and the bot's limits end in one private message that says what to do."""

from __future__ import annotations

import datetime
import re

from playground.standin.client import DriverClient
from playground.standin.messages import Message
from playground.standin.world import APPLICATION_ID, GENERAL_CHANNEL_ID
from tests.e2e.harness import Rig
from tests.e2e.replies import (
    EPHEMERAL,
    LONG_STORY,
    PROMPT,
    buttons,
    finished,
    private_reply,
    replies_to,
    running,
    story_started,
)


async def public_messages(driver: DriverClient, interaction_id: str) -> list[dict]:
    return [m for m in await replies_to(driver, interaction_id) if not m["deleted"] and not m["flags"] & EPHEMERAL]


async def test_blank_story_prompt_is_answered_privately_at_once(driver, reader):
    """A prompt of spaces gets a private explanation as the initial response, and nothing public."""
    interaction = await story_started(driver, reader, "   ")
    assert interaction["response_type"] == "message"
    reply = await private_reply(driver, interaction["id"])
    assert reply["content"] == "Please give the story an opening line (it was empty)."
    assert await public_messages(driver, interaction["id"]) == []


async def test_blank_why_prompt_is_answered_privately_at_once(driver, reader):
    """/why refuses an empty prompt the same way."""
    interaction = await driver.command(reader, "why", {"prompt": "   "})
    assert interaction["response_type"] == "message"
    reply = await private_reply(driver, interaction["id"])
    assert reply["content"] == "Please give a prompt to explain (it was empty)."


async def test_story_prompt_over_the_token_limit_is_withdrawn_and_explained_privately(driver, rig, reader):
    """The public thinking message is deleted and the limit from config.yaml is named privately."""
    limit = rig.config["limits"]["max_prompt_tokens"]
    interaction = await story_started(driver, reader, "a" * (limit + 10))
    reply = await private_reply(driver, interaction["id"])
    assert reply["content"] == f"That prompt is {limit + 10} tokens long; the limit is {limit} tokens."
    assert (await driver.message(interaction["original_message_id"]))["deleted"]
    assert await public_messages(driver, interaction["id"]) == []


async def test_why_prompt_over_the_token_limit_is_withdrawn_and_explained_privately(driver, rig, reader):
    """/why refuses a prompt over the limit the same way."""
    limit = rig.config["limits"]["max_prompt_tokens"]
    interaction = await driver.command(reader, "why", {"prompt": "a" * (limit + 1)})
    reply = await private_reply(driver, interaction["id"])
    assert reply["content"] == f"That prompt is {limit + 1} tokens long; the limit is {limit} tokens."
    assert await public_messages(driver, interaction["id"]) == []


async def test_request_while_another_runs_is_told_to_wait(driver, reader):
    """With one request in flight (config.yaml), a second is refused privately until the first ends."""
    story = await story_started(driver, reader, PROMPT, **LONG_STORY)
    message = await running(driver, story["original_message_id"])
    second = await driver.command(reader, "why", {"prompt": "The fox said to the crow"})
    reply = await private_reply(driver, second["id"])
    assert reply["content"].startswith("You already have a request running; wait for it to finish")
    await driver.click(reader, message["id"], buttons(message)["Stop"]["custom_id"])
    await finished(driver, message["id"])


async def test_continue_while_another_story_runs_is_refused_and_leaves_the_story_as_it_was(driver, reader):
    """A refused Continue is answered privately and the first story keeps its text and buttons."""
    first = await finished(driver, (await story_started(driver, reader, PROMPT, length=6))["original_message_id"])
    second = await running(driver, (await story_started(driver, reader, PROMPT, **LONG_STORY))["original_message_id"])
    click = await driver.click(reader, first["id"], buttons(first)["Continue"]["custom_id"])
    reply = await private_reply(driver, click["id"])
    assert reply["content"].startswith("You already have a request running")
    after = await driver.message(first["id"])
    assert (after["edit_count"], after["embeds"], after["components"]) == (
        first["edit_count"],
        first["embeds"],
        first["components"],
    )
    await driver.click(reader, second["id"], buttons(second)["Stop"]["custom_id"])
    await finished(driver, second["id"])


async def test_requests_over_the_per_minute_limit_are_told_when_to_try_again(driver, rig, reader):
    """After config.yaml's requests per minute, the next one is refused with a wait in seconds."""
    per_minute = rig.config["service"]["per_user_per_minute"]
    for _ in range(per_minute):
        await finished(driver, (await story_started(driver, reader, PROMPT, length=2))["original_message_id"])
    refused = await story_started(driver, reader, PROMPT, length=2)
    reply = await private_reply(driver, refused["id"])
    assert reply["content"].startswith(f"You've started {per_minute} requests in the last minute")
    assert re.search(r"Please try again in \d+ s\.$", reply["content"])


def old_message(rig: Rig, custom_id: str) -> str:
    """A message of the bot's with a button it no longer knows (from an older version, or another feature)."""
    state = rig.standin.state
    message = Message(
        id=state.ids.next(),
        channel_id=GENERAL_CHANNEL_ID,
        author_id=APPLICATION_ID,
        type=0,
        created_at=datetime.datetime.now(datetime.UTC),
        content="A message from an older version",
        components=[{"type": 1, "components": [{"type": 2, "style": 2, "label": "Vote", "custom_id": custom_id}]}],
    )
    rig.standin_thread.call(lambda: state.messages.add(message))
    return str(message.id)


async def test_a_button_the_bot_does_not_know_is_answered_privately_in_time(driver, rig, reader):
    """Discord would show "This interaction failed" for a press nobody acknowledges within 3 s."""
    message_id = old_message(rig, "poll:vote:3")
    click = await driver.click(reader, message_id, "poll:vote:3")
    assert click["status"] == "acknowledged"
    assert "no longer does anything" in (await private_reply(driver, click["id"]))["content"]
