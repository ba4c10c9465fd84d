"""`/story` end to end: the real bot on the tiny model, driven through the stand-in."""

from __future__ import annotations

from playground.standin.client import DriverClient
from tests.e2e.replies import (
    EPHEMERAL,
    LOADING,
    LONG_STORY,
    PROMPT,
    buttons,
    description,
    eventually,
    finished,
    footer,
    is_finished,
    is_running,
    press,
    running,
    seed_of,
    story_started,
    tokens_written,
    versions,
)


async def rewritten(driver: DriverClient, before: dict) -> dict:
    """The story message once it has been edited again and is finished again."""
    return await eventually(
        lambda: driver.message(before["id"]),
        lambda m: m["edit_count"] > before["edit_count"] and is_finished(m),
        what="rewritten story",
    )


async def test_story_is_acknowledged_with_a_public_thinking_reply(driver, reader):
    """The command is deferred at once, publicly, before any text is written."""
    interaction = await story_started(driver, reader, PROMPT, length=4)
    assert (interaction["status"], interaction["response_type"]) == ("acknowledged", "deferred")
    first = versions(await finished(driver, interaction["original_message_id"]))[0]
    assert first["flags"] & LOADING and not first["flags"] & EPHEMERAL


async def test_story_text_streams_into_the_reply_over_several_edits(driver, reader):
    """While the model writes, the reply is edited with more text each time, a cursor at its end."""
    interaction = await story_started(driver, reader, PROMPT, **LONG_STORY)
    message = await finished(driver, interaction["original_message_id"])
    streamed = [description(version) for version in versions(message) if is_running(version)]
    lengths = [len(text) for text in streamed]
    assert len(streamed) >= 3 and lengths == sorted(lengths) and lengths[-1] > lengths[0], lengths
    assert all(text.endswith("▌") for text in streamed)
    assert not description(message).endswith("▌") and len(description(message)) >= lengths[-1] - 2


async def test_finished_story_shows_the_bold_opening_and_offers_continue_and_regenerate(driver, reader):
    """The final reply starts with the opening in bold; Continue, Regenerate and Why? work, Stop is off, and
    the draft buttons wait for a second draft."""
    interaction = await story_started(driver, reader, PROMPT, length=8)
    message = await finished(driver, interaction["original_message_id"])
    assert description(message).startswith(f"**{PROMPT}**")
    assert {label: bool(b.get("disabled")) for label, b in buttons(message).items()} == {
        "Continue": False,
        "Regenerate": False,
        "Stop": True,
        "◀": True,
        "▶": True,
        "Why?": False,
        "Details": False,
        "Thread": False,
        "Delete": False,
    }


async def test_footer_names_the_settings_and_seed_that_reproduce_the_story(driver, reader):
    """The footer holds the strategy, the values given and the seed."""
    interaction = await story_started(driver, reader, PROMPT, length=12, temperature=0.7, seed=1234)
    text = footer(await finished(driver, interaction["original_message_id"]))
    assert text.startswith("sampling · temperature=0.7")
    assert "max_new_tokens=12" in text and "seed=1234" in text


async def test_the_same_seed_writes_the_same_story_again(driver, reader):
    """Two stories from one opening and one seed are the same story."""
    stories = []
    for _ in range(2):
        interaction = await story_started(driver, reader, PROMPT, length=24, seed=77)
        stories.append(description(await finished(driver, interaction["original_message_id"])))
    assert stories[0] == stories[1]


async def test_continue_writes_more_of_the_story_in_the_same_message(driver, reader):
    """Continue is acknowledged as an update and the same message grows from where it stopped."""
    interaction = await story_started(driver, reader, PROMPT, strategy="greedy", length=10)
    before = await finished(driver, interaction["original_message_id"])
    click = await press(driver, reader, before, "Continue")
    assert click["response_type"] == "deferred_update"
    after = await rewritten(driver, before)
    assert len(description(after)) > len(description(before))
    assert description(after).startswith(description(before))


async def test_regenerate_rewrites_the_story_from_the_same_opening_with_a_new_seed(driver, reader):
    """Regenerate keeps the opening and draws another seed."""
    interaction = await story_started(driver, reader, PROMPT, length=12)
    before = await finished(driver, interaction["original_message_id"])
    click = await press(driver, reader, before, "Regenerate")
    assert click["response_type"] == "deferred_update"
    after = await rewritten(driver, before)
    assert description(after).startswith(f"**{PROMPT}**")
    assert seed_of(after) != seed_of(before)


async def test_regenerate_draws_a_new_seed_even_for_a_story_started_with_one(driver, reader):
    """A seed given to /story reproduces that story; Regenerate must still write another one."""
    interaction = await story_started(driver, reader, PROMPT, length=12, seed=4242)
    before = await finished(driver, interaction["original_message_id"])
    await press(driver, reader, before, "Regenerate")
    after = await rewritten(driver, before)
    assert seed_of(after) != 4242


async def test_stop_ends_a_running_story_early(driver, reader):
    """Stop is acknowledged as an update and the story ends, marked stopped, before its length."""
    interaction = await story_started(driver, reader, PROMPT, **LONG_STORY)
    message = await running(driver, interaction["original_message_id"])
    click = await press(driver, reader, message, "Stop")
    assert click["response_type"] == "deferred_update"
    final = await finished(driver, message["id"])
    assert "⏹️ stopped" in footer(final)
    assert tokens_written(final) < LONG_STORY["length"]
