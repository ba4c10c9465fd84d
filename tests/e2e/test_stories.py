"""Stories that last, end to end: drafts, the recipe and its replay, deletion, and story threads."""

from __future__ import annotations

import re
from dataclasses import replace

from playground.standin.client import DriverClient
from playground.standin.world import CREATE_PUBLIC_THREADS, MODERATOR_ROLE_ID, Role
from tests.e2e.harness import Rig
from tests.e2e.replies import (
    LONG_STORY,
    PROMPT,
    buttons,
    description,
    eventually,
    finished,
    footer,
    is_finished,
    press,
    private_replies,
    private_reply,
    reply_where,
    running,
    story_started,
)


async def after_press(driver: DriverClient, user: str, message: dict, label: str) -> dict:
    """Press a button and return the story message once it is edited and finished again."""
    await press(driver, user, message, label)
    return await eventually(
        lambda: driver.message(message["id"]),
        lambda m: m["edit_count"] > message["edit_count"] and is_finished(m),
        what=f"story after {label}",
    )


def story_number(message: dict) -> int:
    match = re.search(r"story #(\d+)", footer(message))
    assert match, footer(message)
    return int(match.group(1))


async def new_story(driver: DriverClient, user: str, **options) -> dict:
    interaction = await story_started(driver, user, PROMPT, **({"length": 8} | options))
    return await finished(driver, interaction["original_message_id"])


async def test_a_moderator_of_the_playground_may_delete_anyones_story(driver, reader, moderator):
    """The playground's Moderator role has Manage Messages, as the refusal to others says a deleter needs."""
    story = await new_story(driver, reader)
    click = await press(driver, moderator, story, "Delete")
    assert "is deleted" in (await private_reply(driver, click["id"]))["content"]
    await eventually(lambda: driver.message(story["id"]), lambda m: not buttons(m), what="buttons removed")


async def test_regenerate_keeps_drafts_and_the_arrows_move_between_them(driver, reader):
    """Regenerate adds a draft instead of overwriting; ◀ ▶ show each; Continue goes on from the one shown."""
    first = await new_story(driver, reader)
    second = await after_press(driver, reader, first, "Regenerate")
    assert "draft 2/2" in footer(second) and description(second) != description(first)
    assert not buttons(second)["◀"].get("disabled") and buttons(second)["▶"].get("disabled")
    back = await after_press(driver, reader, second, "◀")
    assert description(back) == description(first) and "draft 1/2" in footer(back)
    forth = await after_press(driver, reader, back, "▶")
    assert description(forth) == description(second)
    back = await after_press(driver, reader, forth, "◀")
    continued = await after_press(driver, reader, back, "Continue")
    assert description(continued).startswith(description(first))
    # Each part has a fresh random seed, and the tiny random model may end a part at its first
    # token (it did once in a full run): a second press must then go on from the same text.
    for _ in range(2):
        if len(description(continued)) > len(description(first)):
            break
        continued = await after_press(driver, reader, continued, "Continue")
        assert description(continued).startswith(description(first))
    assert len(description(continued)) > len(description(first))


async def test_a_recipe_replays_a_two_part_story_word_for_word(driver, reader, other_reader):
    """Details lists every part's settings and seed; /story replay writes the same text again."""
    story = await new_story(driver, reader, temperature=1.3)
    story = await after_press(driver, reader, story, "Continue")
    click = await press(driver, other_reader, story, "Details")  # anyone may read the recipe
    recipe = (await private_reply(driver, click["id"]))["embeds"][0]["description"]
    number = story_number(story)
    assert "Part 1" in recipe and "Part 2" in recipe and recipe.count("seed=") == 2
    assert f"/story replay:{number}" in recipe
    interaction = await driver.command(other_reader, "story", {"replay": number})
    replayed = await eventually(
        lambda: driver.message(interaction["original_message_id"]),
        lambda m: is_finished(m) and description(m) == description(story),
        what="replayed story identical to the original",
    )
    assert story_number(replayed) != number


async def test_deleting_a_story_and_its_buttons_answer_politely_and_go_away(driver, reader, other_reader):
    """The owner's Delete forgets the record; another story deleted with /tale delete answers its
    buttons privately and takes them away; no one else may delete it."""
    story = await new_story(driver, reader)
    click = await press(driver, other_reader, story, "Delete")
    assert (
        "owner, or members with the Manage Messages permission" in (await private_reply(driver, click["id"]))["content"]
    )
    click = await press(driver, reader, story, "Delete")
    assert "deleted" in (await private_reply(driver, click["id"]))["content"]
    gone = await eventually(lambda: driver.message(story["id"]), lambda m: not buttons(m), what="buttons removed")
    assert description(gone) == description(story)  # the message itself stays

    other = await new_story(driver, reader)
    deleted = await driver.command(reader, "tale delete", {"story": story_number(other)})
    assert "deleted" in (await private_reply(driver, deleted["id"]))["content"]
    click = await press(driver, reader, other, "Continue")
    assert "deleted" in (await private_reply(driver, click["id"]))["content"]
    await eventually(lambda: driver.message(other["id"]), lambda m: not buttons(m), what="stale buttons removed")


async def answer_of(driver: DriverClient, click: dict) -> str:
    """The private answer to a deferred ("thinking…") press, once it is written."""
    replies = await eventually(
        lambda: private_replies(driver, click["id"]),
        lambda found: any(m["content"] for m in found),
        what="private answer",
    )
    return next(m["content"] for m in replies if m["content"])


async def thread_of(driver: DriverClient, user: str, story: dict) -> str:
    """Press Thread under the story; the id of the thread it opened."""
    click = await press(driver, user, story, "Thread")
    assert "Opened the thread" in await answer_of(driver, click)
    state = await driver.state()
    (thread,) = [c for c in state["channels"] if c["type"] == 11 and c["id"] == story["id"]]
    assert thread["parent_id"] is not None and len(thread["name"]) <= 100
    return thread["id"]


async def added(driver: DriverClient, user: str, thread: str, line: str) -> dict:
    interaction = await driver.command(user, "tale add", {"line": line}, channel=thread)
    return await reply_where(
        driver, interaction["original_message_id"], lambda m: "tokens in" in footer(m), what="part written in thread"
    )


async def test_two_people_write_one_story_in_its_thread(driver, rig: Rig, reader, other_reader):
    """A thread on the story: each person's line is bold in the thread and the story goes on from it."""
    story = await new_story(driver, reader)
    thread = await thread_of(driver, reader, story)
    greeting = (await driver.messages(thread))[0]
    assert "/tale add" in greeting["content"]
    first = await added(driver, reader, thread, "The dragon woke up.")
    second = await added(driver, other_reader, thread, "A knight rode by.")
    assert description(first).startswith("**The dragon woke up.**")
    assert description(second).startswith("**A knight rode by.**")
    click = await press(driver, reader, story, "Details")
    recipe = (await private_reply(driver, click["id"]))["embeds"][0]["description"]
    assert "The dragon woke up." in recipe and "A knight rode by." in recipe and "Part 3" in recipe
    again = await press(driver, reader, story, "Thread")  # one story per thread, one thread per story
    assert "already has its thread" in await answer_of(driver, again)


async def test_tale_add_outside_a_story_thread_is_refused_privately(driver, reader):
    interaction = await driver.command(reader, "tale add", {"line": "Hello"})
    assert "not a story thread" in (await private_reply(driver, interaction["id"]))["content"]


async def test_a_server_may_forbid_story_threads(driver, reader, moderator):
    story = await new_story(driver, reader)
    forbidden = await driver.command(moderator, "tale threads", {"allowed": False})
    assert "forbidden" in (await private_reply(driver, forbidden["id"]))["content"]
    try:
        click = await press(driver, reader, story, "Thread")
        assert "does not allow story threads" in await answer_of(driver, click)
    finally:
        await driver.command(moderator, "tale threads", {"allowed": True})


async def test_missing_thread_permissions_are_answered_clearly(driver, rig: Rig, reader):
    """Without Create Public Threads the bot says which permissions it needs, and opens nothing."""
    story = await new_story(driver, reader)
    world = rig.standin.state.world

    def take_away() -> list[Role]:
        before = list(world.roles)
        world.roles = [
            replace(role, permissions=role.permissions & ~CREATE_PUBLIC_THREADS)
            if role.id != MODERATOR_ROLE_ID
            else role
            for role in world.roles
        ]
        return before

    before = rig.standin_thread.call(take_away)
    try:
        click = await press(driver, reader, story, "Thread")
        assert "Create Public Threads" in await answer_of(driver, click)
        state = await driver.state()
        assert not [c for c in state["channels"] if c["type"] == 11 and c["id"] == story["id"]]
    finally:
        rig.standin_thread.call(lambda: setattr(world, "roles", before))


async def test_only_a_moderator_may_forbid_threads(driver, reader):
    refused = await driver.command(reader, "tale threads", {"allowed": False})
    assert "Manage Server" in (await private_reply(driver, refused["id"]))["content"]


async def test_a_crash_while_a_part_is_written_loses_that_part_only(driver, rig: Rig, reader):
    """SIGKILL mid-part: after the restart Stop shows the story as kept, and Continue goes on from it."""
    # Its continuation must be long enough to be caught writing: at length 400 it ended (its end of
    # text) after 237 tokens, 0.1 s on a Zen 4 core, between two polls; at 1000 it runs to the context's end.
    story = await new_story(driver, reader, **LONG_STORY)
    kept = description(story)
    await press(driver, reader, story, "Continue")
    writing = await running(driver, story["id"])
    mark = rig.standin_thread.call(lambda: rig.standin.state.events.last_seq)
    rig.bot.process.kill()
    rig.bot.wait(timeout=30)
    rig.bot.start()
    rig.wait_until_ready(after=mark)
    now = await driver.message(story["id"])
    assert buttons(now)["Stop"].get("disabled") is not True  # left as the crash found it
    await press(driver, reader, writing, "Stop")
    shown = await eventually(
        lambda: driver.message(story["id"]), lambda m: is_finished(m), what="story as kept, buttons back"
    )
    assert description(shown) == kept  # the lost part is gone, the first one is whole
    continued = await after_press(driver, reader, shown, "Continue")
    assert description(continued).startswith(kept) and len(description(continued)) > len(kept)
