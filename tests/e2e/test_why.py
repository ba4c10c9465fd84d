"""`/why` end to end: importance bars per word, the model's guesses, and the chart as a picture."""

from __future__ import annotations

import aiohttp

from tests.e2e.replies import EPHEMERAL, LOADING, description, explained, versions

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
    """view:attention adds attention.png and shows it in the embed."""
    message = await explained(driver, reader, PROMPT, view="attention")
    assert sorted(a["filename"] for a in message["attachments"]) == ["attention.png", "why.png"]
    assert message["embeds"][0]["image"]["url"] == "attachment://attention.png"
