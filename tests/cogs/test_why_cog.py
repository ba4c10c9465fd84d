"""The /why cog with the real model service and importance method; only Discord is faked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cogs.why import WhyCog, render_why
from core.config import Config, DiscordConfig, LimitsConfig, ServiceConfig, WhyConfig
from core.service import WhyResult, WordImportance
from model.service import ModelService
from tests.discord_fakes import FakeInteraction


@pytest.fixture
async def cog(tiny_loaded):
    config = Config(
        service=ServiceConfig(batch_window_ms=0.0),
        limits=LimitsConfig(max_prompt_tokens=120, max_new_tokens=200),
        why=WhyConfig(time_budget_s=10, max_steps=30, starts=4, samples_per_step=1, patience=10),
        discord=DiscordConfig(edit_interval_s=0.05),
    )
    service = ModelService(tiny_loaded, config)
    await service.start()
    yield WhyCog(SimpleNamespace(config=config, service=service))  # type: ignore[arg-type]
    await service.close()


def final(interaction: FakeInteraction) -> dict:
    return interaction.named("edit_original")[-1].kwargs


async def test_why_replies_with_a_bar_per_word_predictions_and_a_chart(cog) -> None:
    interaction = FakeInteraction()
    await cog.why.callback(cog, interaction, prompt="The fox said to the crow")
    assert interaction.calls[0].name == "defer"
    reply = final(interaction)
    (embed,) = reply["embeds"]
    bars = embed.description.split("```")[1].strip().splitlines()
    assert [line.split()[0] for line in bars] == ["The", "fox", "said", "to", "the", "crow"]
    assert sum("◀" in line for line in bars) == 1
    assert embed.fields[0].value.count("%") == 5
    assert [f.filename for f in reply["attachments"]] == ["why.png"]
    assert reply["attachments"][0].fp.read(8) == b"\x89PNG\r\n\x1a\n"
    assert reply["allowed_mentions"].to_dict() == {"parse": []}
    assert len(embed) <= 6000


async def test_attention_view_attaches_the_attention_picture(cog) -> None:
    interaction = FakeInteraction()
    await cog.why.callback(cog, interaction, prompt="Once upon a time", view="attention")
    assert [f.filename for f in final(interaction)["attachments"]] == ["why.png", "attention.png"]


@pytest.mark.parametrize(("prompt", "message"), [("a", "single token"), ("word " * 130, "120")])
async def test_unusable_prompt_gets_an_ephemeral_message(cog, prompt: str, message: str) -> None:
    interaction = FakeInteraction()
    await cog.why.callback(cog, interaction, prompt=prompt)
    last = interaction.calls[-1].kwargs
    assert last["ephemeral"] is True and message in last["content"]


def test_a_long_prompt_stays_within_embed_limits_and_says_so() -> None:
    words = tuple(WordImportance(f"word{i}`@everyone", (f"word{i}",), 1.0 + i, 1 - i / 400) for i in range(400))
    result = WhyResult(
        prompt="…",
        words=words,
        token_sigmas=(),
        top_predictions=(("the", 0.5),) * 5,
        iterations=10,
        elapsed_s=1.0,
        stopped_early=True,
        image_png=b"png",
    )
    (embed,), files = render_why(result)
    assert len(embed.description) <= 4096 and len(embed) <= 6000
    assert "The 25 most important of its 400 words, in the order they come" in embed.description
    assert "Most important: **word0\\`@\u200beveryone**" in embed.description
    listed = embed.description.split("```")[1].strip().splitlines()
    assert len(listed) == 25 and listed[0].startswith("word0") and listed[0].endswith("◀")
    assert embed.description.count("```") == 2  # user backticks cannot break the block
