"""The /story cog with the real model service and store; only Discord is faked."""

from __future__ import annotations

import asyncio
import time

import discord
import pytest

from cogs.story import StoryCog, StoryState, StoryView, render_story
from cogs.utils.formats import EMBED_DESCRIPTION_LIMIT
from core.settings import DecodingSettings
from tests.cogs.conftest import OWNER, STRANGER
from tests.discord_fakes import FakeInteraction


@pytest.fixture
def slowed(tiny_loaded, monkeypatch):
    """About 5 ms per token, so a story streams over several edit intervals."""
    forward = tiny_loaded.model.forward
    monkeypatch.setattr(tiny_loaded.model, "forward", lambda *a, **k: (time.sleep(0.005), forward(*a, **k))[1])


async def run_story(cog: StoryCog, interaction: FakeInteraction, prompt: str, **options) -> None:
    await cog.story.callback(cog, interaction, prompt=prompt, **options)


def final_embed(interaction: FakeInteraction) -> discord.Embed:
    return interaction.named("edit_original")[-1].kwargs["embed"]


def view_of(interaction: FakeInteraction) -> StoryView:
    return interaction.named("edit_original")[-1].kwargs["view"]


async def test_story_defers_first_then_ends_with_prompt_and_continuation(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=30, seed=5)
    assert interaction.calls[0].name == "defer"
    embed = final_embed(interaction)
    assert embed.description.startswith("**Once upon a time**")
    assert len(embed.description) > len("**Once upon a time**")
    assert "seed=5" in embed.footer.text and "max_new_tokens=30" in embed.footer.text


async def test_same_seed_reproduces_the_story(cog) -> None:
    first, second = FakeInteraction(OWNER), FakeInteraction(OWNER)
    await run_story(cog, first, "The fox", seed=11)
    await run_story(cog, second, "The fox", seed=11)
    assert final_embed(first).description == final_embed(second).description


async def test_streaming_edits_are_throttled(cog, slowed) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=150, strategy="greedy")
    edits = interaction.named("edit_original")
    streaming = edits[1:-1]  # between the "writing" status and the final text
    assert len(streaming) >= 2
    gaps = [b.at - a.at for a, b in zip(edits[:-1], edits[1:-1])]
    assert min(gaps) >= 0.1 * 0.9


async def test_every_message_disables_mentions(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "@everyone <@123> <@&456> @here listen", length=10)
    payloads = interaction.sent_payloads()
    assert payloads
    for payload in payloads:
        mentions: discord.AllowedMentions = payload["allowed_mentions"]
        assert mentions.to_dict() == {"parse": []}
    text = final_embed(interaction).description
    assert "@everyone" not in text and "@here" not in text  # escaped with a zero-width space


def test_long_story_stays_within_embed_limits_and_is_attached_whole() -> None:
    state = StoryState(
        owner_id=1,
        guild_id=None,
        opening="Once",
        settings=DecodingSettings(),
        text="Once" + " upon a time" * 1000,
        seeds=[3],
    )
    embed, attachment = render_story(state, running=False, status="")
    assert len(embed.description) <= EMBED_DESCRIPTION_LIMIT and len(embed) <= 6000
    assert attachment is not None and attachment.filename == "story.txt"
    assert attachment.fp.read().decode() == state.text
    streaming, none = render_story(state, running=True, status="writing")
    assert len(streaming.description) <= EMBED_DESCRIPTION_LIMIT and none is None
    assert streaming.description.endswith("▌")


async def test_buttons_refuse_anyone_but_the_requester(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once", length=5)
    view = view_of(interaction)
    stranger = FakeInteraction(STRANGER)
    assert await view.interaction_check(stranger) is False
    refusal = stranger.calls[-1]
    assert refusal.kwargs["ephemeral"] is True and "Only the person" in refusal.kwargs["content"]
    assert await view.interaction_check(FakeInteraction(OWNER)) is True


async def test_why_button_answers_anyone_privately_about_the_storys_next_word(cog) -> None:
    """Why? is for everyone: a stranger's press passes the owner check and gets a private explanation."""
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "The fox said to the crow", length=5)
    view = view_of(interaction)
    assert not view.why_button.disabled
    stranger = FakeInteraction(STRANGER)
    stranger.data = {"custom_id": view.why_button.custom_id}
    assert await view.interaction_check(stranger) is True and stranger.calls == []
    await view.why_button.callback(stranger)
    assert stranger.calls[0].name == "defer" and stranger.calls[0].kwargs["ephemeral"] is True
    (embed,) = stranger.named("edit_original")[-1].kwargs["embeds"]
    assert embed.title == "Why this next word?"
    bars = [line.split()[0] for line in embed.description.split("```")[1].strip().splitlines()]
    assert bars[:5] == ["The", "fox", "said", "to", "the"] and len(view.state.seeds) == 1


async def test_continue_extends_the_story(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=10)
    view = view_of(interaction)
    before = view.state.text
    press = FakeInteraction(OWNER)
    await view.continue_button.callback(press)
    assert press.calls[0].name == "defer"
    assert view.state.text.startswith(before) and len(view.state.text) > len(before)
    assert final_embed(press).description.startswith("**Once upon a time**")


async def test_regenerate_uses_a_new_seed(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=10)
    view = view_of(interaction)
    await view.regenerate_button.callback(FakeInteraction(OWNER))
    assert len(view.state.seeds) == 2 and view.state.seeds[0] != view.state.seeds[1]
    assert view.state.text.startswith("Once upon a time")


async def test_stop_ends_a_running_story(cog, slowed) -> None:
    interaction = FakeInteraction(OWNER)
    task = asyncio.create_task(run_story(cog, interaction, "Once upon a time", length=200, strategy="greedy"))
    deadline = time.monotonic() + 10
    while not interaction.named("edit_original") or view_of(interaction).state.stream is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    view = view_of(interaction)
    assert view.stop_button.disabled is False and view.continue_button.disabled is True
    await view.stop_button.callback(FakeInteraction(OWNER))
    await task
    assert "stopped" in final_embed(interaction).footer.text
    assert view.stop_button.disabled is True and view.continue_button.disabled is False


async def test_empty_prompt_gets_an_ephemeral_error_and_no_defer(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "   ")
    assert [c.name for c in interaction.calls] == ["send_message"]
    assert interaction.calls[0].kwargs["ephemeral"] is True


async def test_too_long_prompt_is_withdrawn_and_explained_privately(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "word " * 100)
    assert [c.name for c in interaction.calls] == ["defer", "delete_original", "followup"]
    followup = interaction.calls[-1].kwargs
    assert followup["ephemeral"] is True and "64 tokens" in followup["content"]


async def test_bad_override_from_a_modified_client_names_the_setting(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once", temperature=float("nan"))
    followup = interaction.calls[-1].kwargs
    assert followup["ephemeral"] is True and "`temperature`" in followup["content"]
    assert not interaction.named("edit_original")
