"""The /story cog with the real model service and store; only Discord is faked."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace

import discord
import pytest
import sqlalchemy as sa

from cogs.story import DELETE_REFUSED, NOT_OWNER, StoryCog
from cogs.story_threads import thread_name
from cogs.story_view import StoryButton, StoryState, render_story
from cogs.utils.formats import EMBED_DESCRIPTION_LIMIT
from core.settings import PRESETS, DecodingSettings
from store.schema import stories
from tests.cogs.conftest import OWNER, STRANGER
from tests.discord_fakes import Call, FakeInteraction


@pytest.fixture
def slowed(tiny_loaded, monkeypatch):
    """About 5 ms per token, so a story streams over several edit intervals."""
    forward = tiny_loaded.model.forward
    monkeypatch.setattr(tiny_loaded.model, "forward", lambda *a, **k: (time.sleep(0.005), forward(*a, **k))[1])


async def run_story(cog: StoryCog, interaction: FakeInteraction, prompt: str, **options) -> None:
    await cog.story.callback(cog, interaction, prompt=prompt, **options)


async def story_being_written(cog: StoryCog, interaction: FakeInteraction, **options) -> asyncio.Task:
    """A 200-token story started in the background, once its part is being written."""
    task = asyncio.create_task(run_story(cog, interaction, "Once upon a time", length=200, **options))
    deadline = time.monotonic() + 10
    while not cog._writing:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    return task


def final_embed(interaction: FakeInteraction) -> discord.Embed:
    return interaction.named("edit_original")[-1].kwargs["embed"]


def view_of(interaction: FakeInteraction) -> discord.ui.View:
    return interaction.named("edit_original")[-1].kwargs["view"]


def button(view: discord.ui.View, action: str) -> StoryButton:
    return next(item for item in view.children if isinstance(item, StoryButton) and item.action == action)


def story_id_of(interaction: FakeInteraction) -> int:
    return button(view_of(interaction), "continue").story_id


async def press(cog: StoryCog, user: int, story_id: int, action: str) -> FakeInteraction:
    interaction = FakeInteraction(user, type=discord.InteractionType.component)
    await cog.on_button(interaction, action, story_id)
    return interaction


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
    story_id = story_id_of(interaction)
    stranger = await press(cog, STRANGER, story_id, "continue")
    refusal = stranger.calls[-1]
    assert refusal.kwargs["ephemeral"] is True and refusal.kwargs["content"] == NOT_OWNER
    assert len((await cog.stories.get(story_id)).chain) == 1  # nothing was written


async def test_buttons_carry_the_story_id_in_their_custom_id(cog) -> None:
    """The custom id is the whole state of a button: a new process rebuilds it from the id alone."""
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once", length=5)
    story_id = story_id_of(interaction)
    ids = [item.custom_id for item in view_of(interaction).children]
    assert f"story:continue:{story_id}" in ids and all(i.endswith(f":{story_id}") for i in ids)
    match = StoryButton.__discord_ui_compiled_template__.fullmatch(f"story:regenerate:{story_id}")
    assert match and (match["action"], int(match["story_id"])) == ("regenerate", story_id)


async def test_why_button_answers_anyone_privately_about_the_storys_next_word(cog) -> None:
    """Why? is for everyone: a stranger's press gets a private explanation."""
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "The fox said to the crow", length=5)
    assert not button(view_of(interaction), "why").item.disabled
    stranger = await press(cog, STRANGER, story_id_of(interaction), "why")
    assert stranger.calls[0].name == "defer" and stranger.calls[0].kwargs["ephemeral"] is True
    (embed,) = stranger.named("edit_original")[-1].kwargs["embeds"]
    assert embed.title == "Why this next word?"
    bars = [line.split()[0] for line in embed.description.split("```")[1].strip().splitlines()]
    assert bars[:5] == ["The", "fox", "said", "to", "the"]
    assert embed.description.startswith("Explained: the whole story (")


async def test_why_on_a_long_story_says_which_part_it_explains_and_lists_the_most_important_word(cog) -> None:
    """The model reads the story's last `max_prompt_tokens` (64 here) tokens: the reply says so, and
    the word it names as most important is one of the words it lists (marked ◀)."""
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time there lived a king", length=60, strategy="greedy")
    story_id = story_id_of(interaction)
    await press(cog, OWNER, story_id, "continue")
    assert await cog.bot.service.count_tokens((await cog.stories.get(story_id)).text) > 64
    (embed,) = (await press(cog, STRANGER, story_id, "why")).named("edit_original")[-1].kwargs["embeds"]
    assert embed.description.startswith("Explained: the story's last ")
    tokens = int(re.search(r"words? \((\d+) tokens, as much as the model reads at once\)", embed.description)[1])
    assert tokens <= 64
    best = embed.description.split("Most important: **", 1)[1].split("**", 1)[0].replace("\\", "")
    marked = [line for line in embed.description.split("```")[1].splitlines() if line.endswith("◀")]
    assert len(marked) == 1 and marked[0].startswith(best[:8])


async def test_continue_extends_the_story(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=10)
    story_id = story_id_of(interaction)
    before = (await cog.stories.get(story_id)).text
    pressed = await press(cog, OWNER, story_id, "continue")
    assert pressed.calls[0].name == "defer"
    after = await cog.stories.get(story_id)
    assert after.text.startswith(before) and len(after.text) > len(before) and len(after.chain) == 2
    assert final_embed(pressed).description.startswith("**Once upon a time**")


async def test_regenerate_adds_a_draft_with_a_new_seed_and_keeps_the_first(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=10)
    story_id = story_id_of(interaction)
    first = await cog.stories.get(story_id)
    await press(cog, OWNER, story_id, "regenerate")
    second = await cog.stories.get(story_id)
    assert len(second.drafts) == 2 and len(second.chain) == 1
    assert second.shown.seed != first.shown.seed and second.text.startswith("Once upon a time")
    back = await press(cog, OWNER, story_id, "prev")
    assert (await cog.stories.get(story_id)).text == first.text
    assert "draft 1/2" in final_embed(back).footer.text


async def test_stop_ends_a_running_story(cog, slowed) -> None:
    interaction = FakeInteraction(OWNER)
    task = await story_being_written(cog, interaction, strategy="greedy")
    (story_id,) = cog._writing
    assert not button(view_of(interaction), "stop").item.disabled
    assert button(view_of(interaction), "continue").item.disabled
    await press(cog, OWNER, story_id, "stop")
    await task
    assert "stopped" in final_embed(interaction).footer.text
    assert button(view_of(interaction), "stop").item.disabled
    story = await cog.stories.get(story_id)
    assert story.shown.stop_reason == "stopped" and story.shown.settings.max_new_tokens < 200


async def test_a_deleted_storys_button_answers_politely_and_takes_the_buttons_away(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once", length=5)
    story_id = story_id_of(interaction)
    deleted = await press(cog, OWNER, story_id, "delete")
    assert deleted.calls[0].name == "edit_message" and deleted.calls[0].kwargs["view"] is None
    assert await cog.stories.get(story_id) is None
    later = await press(cog, OWNER, story_id, "continue")
    assert [c.name for c in later.calls] == ["edit_message", "followup"]
    assert later.calls[0].kwargs["view"] is None and later.calls[1].kwargs["ephemeral"] is True
    assert "deleted" in later.calls[1].kwargs["content"]


async def test_only_the_owner_or_manage_messages_may_delete(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once", length=5)
    story_id = story_id_of(interaction)
    refused = await press(cog, STRANGER, story_id, "delete")
    assert refused.calls[-1].kwargs["content"] == DELETE_REFUSED and "Manage Messages" in DELETE_REFUSED
    assert await cog.stories.get(story_id) is not None
    moderator = FakeInteraction(STRANGER, type=discord.InteractionType.component)
    moderator.permissions = discord.Permissions(manage_messages=True)
    await cog.on_button(moderator, "delete", story_id)
    assert await cog.stories.get(story_id) is None


async def test_details_list_every_parts_settings_and_seed(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once", length=5, seed=31)
    story_id = story_id_of(interaction)
    await press(cog, OWNER, story_id, "continue")
    details = await press(cog, STRANGER, story_id, "details")
    (call,) = details.calls
    assert call.kwargs["ephemeral"] is True
    text = call.kwargs["embed"].description
    assert text.count("seed=31") == 2 and "Part 2" in text and f"/story replay:{story_id}" in text


async def test_replay_writes_a_two_part_story_again_word_for_word(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=8)
    story_id = story_id_of(interaction)
    await press(cog, OWNER, story_id, "continue")
    original = await cog.stories.get(story_id)
    replay = FakeInteraction(STRANGER)
    await run_story(cog, replay, None, replay=story_id)
    copy = await cog.stories.get(story_id_of(replay))
    assert copy.id != story_id and copy.owner_id == STRANGER
    assert copy.text == original.text and [p.seed for p in copy.chain] == [p.seed for p in original.chain]


async def test_a_replay_under_another_precision_says_so_and_the_recipe_names_each_parts(cog, tiny_model_dir) -> None:
    from model.loading import load_model
    from model.service import ModelService

    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=8, seed=4)
    story_id = story_id_of(interaction)
    assert [p.precision for p in (await cog.stories.get(story_id)).chain] == ["fp32"]
    details = await press(cog, STRANGER, story_id, "details")
    assert "seed=4` in fp32" in details.calls[0].kwargs["embed"].description
    same = FakeInteraction(OWNER)
    await run_story(cog, same, None, replay=story_id)
    assert "replayed in" not in final_embed(same).footer.text
    fp32_service = cog.bot.service
    int8_service = ModelService(load_model(tiny_model_dir, device="cpu", precision="int8"), fp32_service.config)
    await int8_service.start()
    cog.bot.service = int8_service
    try:
        replay = FakeInteraction(OWNER)
        await run_story(cog, replay, None, replay=story_id)
    finally:
        cog.bot.service = fp32_service
        await int8_service.close()
    assert "This part was written in fp32 and is replayed in int8" in final_embed(replay).footer.text
    assert [p.precision for p in (await cog.stories.get(story_id_of(replay))).chain] == ["int8"]


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


class DeletedMessageInteraction(FakeInteraction):
    """The story message is deleted in Discord after the first edit: every later edit is a 404."""

    async def edit_original_response(self, **kwargs):
        if self.named("edit_original"):
            self.calls.append(Call("edit_original_404", kwargs))
            raise discord.NotFound(SimpleNamespace(status=404, reason="Not Found"), {"code": 10008, "message": "x"})
        return await super().edit_original_response(**kwargs)


async def test_a_story_message_deleted_in_discord_leaves_a_whole_record(cog, slowed) -> None:
    """The part is stopped where it got and kept; the record, its recipe and a replay still work."""
    interaction = DeletedMessageInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=200, strategy="greedy")
    story_id = story_id_of(interaction)
    story = await cog.stories.get(story_id)
    assert story is not None and len(story.chain) == 1 and story.shown.stop_reason == "stopped"
    assert story.message_id == 9000 + interaction.id  # the place was saved at the first edit
    details = await press(cog, OWNER, story_id, "details")
    assert "Part 1" in details.calls[0].kwargs["embed"].description


def test_thread_names_are_one_line_of_at_most_100_characters() -> None:
    name = thread_name("A long opening\nwith lines " * 30)
    assert len(name) <= 100 and "\n" not in name and name.startswith("📖 A long opening with lines")
    assert thread_name("   ") == "📖 A story" and thread_name("Short") == "📖 Short"


async def test_story_without_an_opening_or_a_replay_is_refused_privately(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, None)
    assert [c.name for c in interaction.calls] == ["send_message"] and interaction.calls[0].kwargs["ephemeral"]


async def test_replay_refuses_other_options_unknown_stories_and_other_servers_stories(cog) -> None:
    interaction = FakeInteraction(OWNER, guild_id=555)
    await run_story(cog, interaction, "Once", length=5)
    story_id = story_id_of(interaction)
    for user, guild, options in (
        (OWNER, 555, {"replay": story_id, "seed": 3}),  # the recipe says how: no other option
        (OWNER, 555, {"replay": story_id + 1000}),  # no such story
        (OWNER, 555, {"replay": 2**70}),  # beyond any story number (a modified client)
        (STRANGER, 666, {"replay": story_id}),  # someone else's story, in another server
    ):
        refused = FakeInteraction(user, guild_id=guild)
        await cog.story.callback(cog, refused, **options)
        assert [c.name for c in refused.calls] == ["send_message"] and refused.calls[0].kwargs["ephemeral"]
    assert await cog.stories.get(story_id + 1) is None  # nothing was written


async def story_count(cog: StoryCog) -> int:
    def count(connection: sa.Connection) -> int:
        return connection.scalar(sa.select(sa.func.count()).select_from(stories))

    return await cog.bot.preferences.database.read(count)


async def test_a_refused_story_takes_no_number_and_leaves_no_record(cog, slowed) -> None:
    """Too long a prompt, or a second request while one runs: refused before any text, nothing kept."""
    first = FakeInteraction(OWNER)
    await run_story(cog, first, "Once", length=5)
    number = story_id_of(first)
    await run_story(cog, FakeInteraction(OWNER), "word " * 100)
    running = FakeInteraction(OWNER)
    task = await story_being_written(cog, running, strategy="greedy")
    refused = FakeInteraction(OWNER)
    await run_story(cog, refused, "Another opening")
    assert "already have a request running" in refused.last_text()
    await press(cog, OWNER, number + 1, "stop")
    await task
    assert story_id_of(running) == number + 1
    after = FakeInteraction(OWNER)
    await run_story(cog, after, "Once", length=5)
    assert story_id_of(after) == number + 2 and await story_count(cog) == 3


async def test_a_first_part_cut_by_a_restart_shows_no_none_in_its_footer(cog, slowed) -> None:
    interaction = FakeInteraction(OWNER)
    task = await story_being_written(cog, interaction)
    await cog.shutdown()
    await task
    footer = final_embed(interaction).footer.text
    assert "restarting" in footer and "None" not in footer


async def test_story_strategy_beam_writes_with_the_beam_presets_loop_guard(cog) -> None:
    interaction = FakeInteraction(OWNER)
    await run_story(cog, interaction, "Once upon a time", length=20, strategy="beam")
    footer = final_embed(interaction).footer.text
    guard = PRESETS["precise"].values["no_repeat_ngram_size"]
    assert guard > 0 and footer.startswith("beam · ") and f"no_repeat_ngram_size={guard}" in footer
    assert (await cog.stories.get(story_id_of(interaction))).shown.settings.no_repeat_ngram_size == guard
