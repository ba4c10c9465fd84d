"""Threads as Discord documents them: `POST /channels/{channel.id}/messages/{message.id}/threads`
opens a public thread (type 11) on a message; the thread is then a channel of its own.

Discord's rules checked here: the name is 1-100 characters, a message has at most one thread,
threads start from messages of text channels (not of threads), and the bot needs Create Public
Threads (and, to write there, Send Messages in Threads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from playground.standin import breaches as rules
from playground.standin.errors import ApiError, invalid_form_body, unknown
from playground.standin.payloads import thread_json
from playground.standin.state import StandInState
from playground.standin.world import CREATE_PUBLIC_THREADS, PUBLIC_THREAD, Channel

THREAD_NAME_LIMIT = 100
AUTO_ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)


async def start_thread_from_message(
    state: StandInState, channel_id: int, message_id: int, payload: Mapping[str, Any], route: str
) -> dict[str, Any]:
    """Open a thread on a message; answers the thread channel, and sends THREAD_CREATE to the bot."""
    world = state.world
    try:
        parent = world.find_channel(channel_id)
    except KeyError:
        raise unknown("channel") from None
    try:
        message = state.messages.get(message_id)
    except KeyError:
        raise unknown("message") from None
    if message.deleted or message.channel_id != channel_id or message.visible_to is not None:
        raise unknown("message")
    if parent.is_thread:
        raise ApiError(400, 50024, "Cannot execute action on this channel type")
    if not world.permissions_of(world.bot.id, parent.guild_id) & CREATE_PUBLIC_THREADS:
        raise ApiError(403, 50013, "Missing Permissions")
    name = str(payload.get("name") or "")
    if not 1 <= len(name) <= THREAD_NAME_LIMIT:
        breach = f"name: Must be between 1 and {THREAD_NAME_LIMIT} in length."
        state.breaches.record(rules.LIMIT, breach, route=route)
        raise invalid_form_body([breach])
    duration = payload.get("auto_archive_duration")
    if duration is not None and duration not in AUTO_ARCHIVE_DURATIONS:
        raise invalid_form_body([f"auto_archive_duration: Value must be one of {AUTO_ARCHIVE_DURATIONS}."])
    if message.thread_id is not None:
        raise ApiError(400, 160004, "A thread has already been created for this message")
    thread = Channel(
        id=message.id,  # as on Discord: a thread started from a message takes the message's id
        name=name,
        topic="",
        position=0,
        type=PUBLIC_THREAD,
        parent_id=parent.id,
        owner_id=world.bot.id,
        guild_id=parent.guild_id,
    )
    world.channels.append(thread)
    message.thread_id = thread.id
    body = thread_json(thread)
    state.events.publish("thread_create", body | {"message_id": str(message.id)})
    state.publish_message("message_update", message)  # the starter message now links to its thread
    await state.hub.dispatch("THREAD_CREATE", body | {"newly_created": True}, guild_id=parent.guild_id)
    return body
