"""Hostile input, table-driven: every case ends in a clear ephemeral message or a normal reply —
never an exception, a traceback, a ping, or a reply over Discord's limits."""

from __future__ import annotations

import math

import discord
import pytest

from tests.cogs.conftest import OWNER
from tests.discord_fakes import FakeInteraction

HOSTILE_PROMPTS = {
    "empty": "",
    "whitespace": " \n\t  ",
    "100k characters": "a" * 100_000,
    "only emoji": "🐉👑✨",
    "zero-width": "Once\u200b upon\u200d a\ufeff time\u2060",
    "right-to-left": "Once \u202eemit a nopu\u202c there was \u05e9\u05dc\u05d5\u05dd",
    "control characters": "Once\x00 upon\x07 a\x1b[31m time\x7f",
    "lone surrogates": "Once \ud800 upon \udfff a time",
    "markdown breakers": "```\n**_~~||Once|| upon```` a `time` > quote\n# heading",
    "end-of-text token": "<|endoftext|>Once upon a time<|endoftext|>",
    "mentions": "@everyone @here <@1234> <@&5678> wake",
    "links": "Visit https://example.com/@everyone and discord.gg/invite now",
    "output over the limits": "||" * 1000,
}
ERROR_EXPECTED = {"empty", "whitespace", "100k characters"}
EITHER = {"output over the limits"}
"""Cases that may fit the prompt limit or not, depending on the tokenizer: both outcomes are fine."""


def payload_texts(payload: dict) -> list[str]:
    texts = [payload.get("content") or ""]
    embed = payload.get("embed")
    if embed is not None:
        texts += [embed.title or "", embed.description or "", embed.footer.text or ""]
        texts += [f.value for f in embed.fields]
    return texts


def assert_safe(interaction: FakeInteraction) -> None:
    assert interaction.calls, "the interaction was never answered"
    for payload in interaction.sent_payloads():
        assert payload["allowed_mentions"].to_dict() == {"parse": []}
        for text in payload_texts(payload):
            assert "Traceback" not in text
            for mention in ("@everyone", "@here"):
                assert mention not in text  # escaped with a zero-width space
        embed = payload.get("embed")
        if embed is not None:
            assert len(embed.description or "") <= 4096 and len(embed) <= 6000
        if payload.get("content"):
            assert len(payload["content"]) <= 2000


@pytest.mark.parametrize("name", list(HOSTILE_PROMPTS))
async def test_hostile_prompt_to_story(story_cog, name: str) -> None:
    interaction = FakeInteraction(OWNER)
    await story_cog.story.callback(story_cog, interaction, prompt=HOSTILE_PROMPTS[name], length=30)
    assert_safe(interaction)
    errors = [c for c in interaction.calls if c.kwargs.get("ephemeral")]
    if name in ERROR_EXPECTED:
        assert errors and not interaction.named("edit_original")
    elif name in EITHER:
        assert errors or interaction.named("edit_original")
    else:
        assert not errors, errors[0].kwargs["content"] if errors else ""
        final = interaction.named("edit_original")[-1].kwargs["embed"]
        assert final.description.startswith("**")


HOSTILE_OPTIONS = [
    ("length", "100"),
    ("length", -5),
    ("length", 10**12),
    ("length", math.nan),
    ("length", 1.5),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", -1.0),
    ("temperature", "hot"),
    ("temperature", 1e308),
    ("seed", -1),
    ("seed", 2**63),
    ("seed", "abc"),
    ("strategy", "nucleus"),
    ("strategy", 5),
    ("strategy", ""),
]


@pytest.mark.parametrize(("option", "value"), HOSTILE_OPTIONS)
async def test_hostile_option_values_from_a_modified_client(story_cog, option: str, value: object) -> None:
    interaction = FakeInteraction(OWNER)
    await story_cog.story.callback(story_cog, interaction, prompt="Once upon a time", **{option: value})
    assert_safe(interaction)
    message = interaction.calls[-1].kwargs
    assert message.get("ephemeral") is True
    field = {"length": "max_new_tokens"}.get(option, option)
    assert f"`{field}`" in message["content"]
    assert not interaction.named("edit_original")
    # And nothing was saved as a side effect.
    assert await story_cog.bot.preferences.get(__import__("store").Scope.USER, OWNER) == {}


def test_allowed_mentions_none_really_disables_everything() -> None:
    assert discord.AllowedMentions.none().to_dict() == {"parse": []}
