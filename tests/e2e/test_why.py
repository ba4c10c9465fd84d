"""`/why` end to end: importance bars per word, the model's guesses, and the chart as a picture."""

from __future__ import annotations

import re

import aiohttp

from tests.e2e.replies import (
    EPHEMERAL,
    LOADING,
    LONG_STORY,
    buttons,
    description,
    eventually,
    explained,
    finished,
    is_running,
    replies_to,
    running,
    story_started,
    versions,
)

PROMPT = "The fox said to the crow"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.read()


async def test_why_reply_is_public_and_deferred_first(driver, reader):
    """The explanation replaces a public thinking message."""
    message = await explained(driver, reader, PROMPT)
    first = versions(message)[0]
    assert first["flags"] & LOADING and not message["flags"] & EPHEMERAL


async def test_why_shows_one_bar_per_word_and_marks_the_most_important(driver, reader):
    """Each word of the prompt has its bar in a code block; exactly one is marked the most important."""
    message = await explained(driver, reader, PROMPT)
    assert message["embeds"][0]["title"] == "Why this next word?"
    bars = description(message).split("```")[1].strip().splitlines()
    assert [line.split()[0] for line in bars] == PROMPT.split()
    assert sum("◀" in line for line in bars) == 1
    assert "Most important: **" in description(message)


async def test_why_lists_the_models_five_next_word_guesses(driver, reader):
    """A field holds the top-5 predictions with their probabilities."""
    message = await explained(driver, reader, PROMPT)
    (field,) = message["embeds"][0]["fields"]
    assert field["name"] == "The model's next-word guesses"
    guesses = field["value"].strip("`\n").splitlines()
    assert len(guesses) == 5 and all(line.rstrip().endswith("%") for line in guesses)


async def test_why_attaches_the_chart_as_a_png_shown_in_the_embed(driver, reader):
    """why.png is attached, is a PNG, and is the embed's image."""
    message = await explained(driver, reader, PROMPT)
    (attachment,) = message["attachments"]
    assert attachment["filename"] == "why.png"
    assert message["embeds"][0]["image"]["url"] == "attachment://why.png"
    assert (await fetch(attachment["url"])).startswith(PNG_SIGNATURE)


async def test_why_attention_view_attaches_the_attention_chart_too(driver, reader):
    """view:attention adds attention.png in an embed of its own; the bars chart stays in the first one."""
    message = await explained(driver, reader, PROMPT, view="attention")
    assert sorted(a["filename"] for a in message["attachments"]) == ["attention.png", "why.png"]
    assert [e["image"]["url"] for e in message["embeds"]] == ["attachment://why.png", "attachment://attention.png"]


async def test_why_footer_gives_one_time(driver, reader):
    """The footer names the time once (a second, different time confused readers)."""
    message = await explained(driver, reader, PROMPT)
    text = message["embeds"][0]["footer"]["text"]
    assert len(re.findall(r"\d s\b", text)) == 1 and "steps in" in text


async def why_pressed(driver, user: str, story: dict) -> tuple[dict, dict]:
    """`user` presses the story's Why?; the click and its reply once the explanation is in."""
    click = await driver.click(user, story["id"], buttons(story)["Why?"]["custom_id"])
    reply = await eventually(
        lambda: driver.message(click["original_message_id"]),
        lambda m: m["deleted"] or bool(m["attachments"]),
        what="the Why? button's explanation",
    )
    assert not reply["deleted"], [m["content"] for m in await replies_to(driver, click["id"])]
    return click, reply


def bar_words(message: dict) -> list[str]:
    """The words of the bars, as far as shown (a long word is cut to 16 columns, ending in …)."""
    return [line.split()[0].rstrip("…") for line in description(message).split("```")[1].strip().splitlines()]


def story_words(message: dict) -> list[str]:
    return description(message).replace("**", "").split()


def ends_with(words: list[str], shown: list[str]) -> bool:
    """Whether `shown` are the last words of `words` (each as far as the bars show it)."""
    tail = words[len(words) - len(shown) :]
    return len(tail) == len(shown) and all(w.startswith(s) for w, s in zip(tail, shown, strict=True))


async def test_why_button_explains_the_storys_next_word_privately_to_anyone(driver, reader, other_reader):
    """Someone who did not write the story presses Why?: only they see the answer, about the story's end."""
    interaction = await story_started(driver, reader, PROMPT, strategy="greedy", length=8)
    story = await finished(driver, interaction["original_message_id"])
    click, reply = await why_pressed(driver, other_reader, story)
    assert click["response_type"] == "deferred"
    assert versions(reply)[0]["flags"] & EPHEMERAL and reply["flags"] & EPHEMERAL
    assert reply["embeds"][0]["title"] == "Why this next word?"
    words = bar_words(reply)
    assert ends_with(story_words(story), words) and words[:5] == PROMPT.split()[:5]  # all of a short story
    assert (await driver.message(story["id"]))["edit_count"] == story["edit_count"]  # the story is untouched


async def test_why_button_on_a_long_story_explains_its_tail_within_the_prompt_limit(driver, reader):
    """A story longer than the prompt limit (128 tokens here) is explained from its last words."""
    interaction = await story_started(driver, reader, PROMPT, **LONG_STORY)  # 300 tokens took 0.2 s: two polls
    message = await running(driver, interaction["original_message_id"])
    assert buttons(message)["Why?"]["disabled"] and is_running(message)  # not before the story is written
    story = await finished(driver, interaction["original_message_id"])
    _, reply = await why_pressed(driver, reader, story)
    words = bar_words(reply)
    assert 4 < len(words) <= 128 and words[0] != PROMPT.split()[0], words
    assert ends_with(story_words(story), words[1:])  # the first may be the end of a cut word
