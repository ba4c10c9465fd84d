"""Reading what the bot sent, through the stand-in's driver API: stories, private replies, polling."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from playground.standin.client import DriverClient, DriverRefused

T = TypeVar("T")

EPHEMERAL = 64
LOADING = 128
PROMPT = "Once upon a time there lived a king"
LONG_STORY = {"strategy": "greedy", "length": 1000}
"""Writing to the context's end on the tiny model (greedy never stops early from PROMPT): 0.6 s on a Zen 4 core, a
few seconds on slower ones; long enough to stream, stop or outlive a reconnect (shorter stories can end between
two polls)."""
PING = re.compile(r"@(everyone|here)\b|<@[!&]?\d{15,20}>")
"""What Discord would turn into a ping, were mentions allowed: escaped text (`@\u200beveryone`) is not."""


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], *, timeout: float = 30.0, what: str = "it"
) -> T:
    """Poll `probe` until `ok` holds for its value; fail after `timeout` seconds with the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s; last seen: {value!r}"[:3000])
        await asyncio.sleep(0.1)


async def press(driver: DriverClient, user: str, message: dict[str, Any], label: str) -> dict[str, Any]:
    """Click the button of `message` that shows `label`."""
    return await driver.click(user, message["id"], buttons(message)[label]["custom_id"])


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's buttons by label."""
    return {
        component["label"]: component
        for row in message.get("components") or []
        for component in row.get("components") or []
        if component.get("type") == 2
    }


def is_running(message: dict[str, Any]) -> bool:
    """A story being written: Stop can be pressed."""
    stop = buttons(message).get("Stop")
    return stop is not None and not stop.get("disabled")


def is_finished(message: dict[str, Any]) -> bool:
    """A story written to its end: Continue can be pressed again."""
    found = buttons(message)
    return "Continue" in found and not found["Continue"].get("disabled") and not is_running(message)


def description(message: dict[str, Any]) -> str:
    embeds = message.get("embeds") or []
    return (embeds[0].get("description") or "") if embeds else ""


def footer(message: dict[str, Any]) -> str:
    embeds = message.get("embeds") or []
    return ((embeds[0].get("footer") or {}).get("text") or "") if embeds else ""


def tokens_written(message: dict[str, Any]) -> int:
    match = re.search(r"(\d+) tokens in", footer(message))
    assert match, footer(message)
    return int(match.group(1))


def seed_of(message: dict[str, Any]) -> int:
    match = re.search(r"seed=(\d+)", footer(message))
    assert match, footer(message)
    return int(match.group(1))


def texts(message: dict[str, Any]) -> list[str]:
    """Every piece of text a message shows: content, and each embed's title, description, fields, footer."""
    found = [message.get("content") or ""]
    for embed in message.get("embeds") or []:
        found += [embed.get("title") or "", embed.get("description") or ""]
        found += [f"{f.get('name', '')}\n{f.get('value', '')}" for f in embed.get("fields") or []]
        found += [(embed.get("footer") or {}).get("text") or "", (embed.get("author") or {}).get("name") or ""]
    return [text for text in found if text]


def versions(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Every version of a message, oldest first, ending with the current one."""
    return [*message.get("history", []), message]


def pings(messages: Iterable[dict[str, Any]]) -> list[str]:
    """Unescaped mentions in any version of any of `messages`."""
    return [
        match.group(0)
        for message in messages
        for version in versions(message)
        for text in texts(version)
        for match in PING.finditer(text)
    ]


async def story_started(driver: DriverClient, user: str, prompt: str, channel: str = "general", **options: Any):
    """`/story` as `user`; returns the interaction once it is acknowledged."""
    return await driver.command(user, "story", {"prompt": prompt, **options}, channel=channel)


async def reply_where(
    driver: DriverClient, message_id: str, ok: Callable[[dict[str, Any]], bool], *, what: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The public reply once `ok` holds for it; fails at once if the bot withdrew it instead."""
    message = await eventually(
        lambda: driver.message(message_id), lambda m: m["deleted"] or ok(m), timeout=timeout, what=what
    )
    assert not message["deleted"], f"the bot withdrew the reply instead of giving a {what}"
    return message


async def finished(driver: DriverClient, message_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
    return await reply_where(driver, message_id, is_finished, what="finished story", timeout=timeout)


async def stop_and_wait(driver: DriverClient, user: str, message: dict[str, Any]) -> dict[str, Any]:
    """Press a story's Stop (as last seen) and wait for it to finish; a story that ended by itself
    in between has its Stop disabled, which the stand-in refuses as Discord's client would."""
    try:
        await driver.click(user, message["id"], buttons(message)["Stop"]["custom_id"])
    except DriverRefused as refused:
        if "disabled" not in refused.message:
            raise
    return await finished(driver, message["id"])


async def running(driver: DriverClient, message_id: str, *, timeout: float = 15.0) -> dict[str, Any]:
    return await reply_where(driver, message_id, is_running, what="running story", timeout=timeout)


async def explained(driver: DriverClient, user: str, prompt: str, **options: str) -> dict[str, Any]:
    """Run /why and return its reply once the explanation (with its picture) is in."""
    interaction = await driver.command(user, "why", {"prompt": prompt, **options})
    assert (interaction["status"], interaction["response_type"]) == ("acknowledged", "deferred")
    return await reply_where(
        driver, interaction["original_message_id"], lambda m: bool(m["attachments"]), what="explanation"
    )


async def replies_to(driver: DriverClient, interaction_id: str) -> list[dict[str, Any]]:
    """The messages an interaction produced (its original response and follow-ups), deleted ones included."""
    record = await driver.interaction(interaction_id)
    ids = [record["original_message_id"], *record["followup_message_ids"]]
    return [await driver.message(message_id) for message_id in ids if message_id]


async def private_replies(driver: DriverClient, interaction_id: str) -> list[dict[str, Any]]:
    """The ephemeral messages an interaction produced, still shown."""
    return [m for m in await replies_to(driver, interaction_id) if m["flags"] & EPHEMERAL and not m["deleted"]]


async def private_reply(driver: DriverClient, interaction_id: str, *, timeout: float = 15.0) -> dict[str, Any]:
    """The one ephemeral reply an interaction gets (waiting for it when it is a follow-up)."""
    replies = await eventually(
        lambda: private_replies(driver, interaction_id), bool, timeout=timeout, what="private reply"
    )
    assert len(replies) == 1, replies
    return replies[0]
