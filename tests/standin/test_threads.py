"""Threads in the stand-in, as Discord documents them: one per message, names of 1-100 characters,
type 11 with the parent channel, and the bot's Create Public Threads permission."""

from __future__ import annotations

import dataclasses

import pytest

from playground.standin import StandIn
from playground.standin.errors import ApiError
from playground.standin.messages import Message
from playground.standin.payloads import now
from playground.standin.threads import start_thread_from_message
from playground.standin.world import APPLICATION_ID, CREATE_PUBLIC_THREADS, GENERAL_CHANNEL_ID, PUBLIC_THREAD

ROUTE = "POST /channels/…/threads"


def posted(standin: StandIn) -> Message:
    state = standin.state
    return state.messages.add(
        Message(state.ids.next(), GENERAL_CHANNEL_ID, APPLICATION_ID, 0, now(), content="A story")
    )


async def test_a_thread_opens_on_a_message_as_a_type_11_channel(standin: StandIn) -> None:
    message = posted(standin)
    thread = await start_thread_from_message(standin.state, GENERAL_CHANNEL_ID, message.id, {"name": "t" * 100}, ROUTE)
    assert (thread["type"], thread["parent_id"], thread["id"]) == (
        PUBLIC_THREAD,
        str(GENERAL_CHANNEL_ID),
        str(message.id),
    )
    channel = standin.state.world.find_channel(thread["id"])
    assert channel.is_thread and standin.state.message_json(message)["thread"]["id"] == thread["id"]
    with pytest.raises(ApiError) as again:
        await start_thread_from_message(standin.state, GENERAL_CHANNEL_ID, message.id, {"name": "again"}, ROUTE)
    assert again.value.code == 160004
    with pytest.raises(ApiError) as nested:
        await start_thread_from_message(standin.state, channel.id, message.id, {"name": "nested"}, ROUTE)
    assert nested.value.status == 404  # the message is not in the thread: Discord answers Unknown Message


async def test_a_name_over_100_characters_is_a_breach_and_refused(standin: StandIn) -> None:
    message = posted(standin)
    with pytest.raises(ApiError) as refused:
        await start_thread_from_message(standin.state, GENERAL_CHANNEL_ID, message.id, {"name": "t" * 101}, ROUTE)
    assert refused.value.code == 50035
    assert [b.rule for b in standin.state.breaches.all()] == ["limit"]
    assert message.thread_id is None


async def test_without_create_public_threads_the_bot_is_refused(standin: StandIn) -> None:
    world = standin.state.world
    world.roles = [dataclasses.replace(r, permissions=r.permissions & ~CREATE_PUBLIC_THREADS) for r in world.roles]
    message = posted(standin)
    with pytest.raises(ApiError) as refused:
        await start_thread_from_message(standin.state, GENERAL_CHANNEL_ID, message.id, {"name": "t"}, ROUTE)
    assert (refused.value.status, refused.value.code) == (403, 50013)
