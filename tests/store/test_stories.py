"""Stories, on SQLite and on PostgreSQL: parts and drafts, deletion, retention, text either database takes."""

from __future__ import annotations

from core.settings import DecodingSettings
from store import Scope, StoryStore
from store.stories import DAY_S, SqlStoryStore
from tests.store.conftest import execute

USER, GUILD = 1001, 555
SAMPLING = DecodingSettings(strategy="sampling", max_new_tokens=12, temperature=0.8)


async def _part(stories: StoryStore, story_id: int, parent: int | None, text: str, seed: int = 1):
    return await stories.add_part(
        story_id,
        parent_id=parent,
        author_id=USER,
        added="",
        settings=SAMPLING,
        seed=seed,
        text=text,
        stop_reason="length",
    )


async def test_a_story_keeps_its_chain_its_drafts_and_each_parts_settings(store) -> None:
    stories = store.stories
    story_id = await stories.create(USER, GUILD, 77, "Once", SAMPLING)
    first = await _part(stories, story_id, None, " upon", seed=5)
    second = await _part(stories, story_id, first.id, " a time", seed=6)
    draft = await _part(stories, story_id, first.id, " a dragon", seed=7)
    story = await stories.get(story_id)
    assert story.text == "Once upon a dragon" and story.drafts == (second.id, draft.id) and story.draft_index == 1
    assert [(p.seed, p.settings) for p in story.chain] == [(5, SAMPLING), (7, SAMPLING)]
    assert await stories.show(story_id, second.id)
    assert (await stories.get(story_id)).text == "Once upon a time"
    assert not await stories.show(story_id, 999_999)  # no such part: nothing changes
    assert (await stories.get(story_id)).text == "Once upon a time"


async def test_a_thread_carries_one_story(store) -> None:
    stories = store.stories
    story_id = await stories.create(USER, GUILD, 77, "Once", SAMPLING)
    assert await stories.set_thread(story_id, 9001)
    assert not await stories.set_thread(story_id, 9002)
    assert (await stories.by_thread(9001)).id == story_id and await stories.by_thread(9002) is None


async def test_deleting_a_story_removes_every_part_and_leaves_preferences(store) -> None:
    await store.set(Scope.USER, USER, {"temperature": 0.5})
    stories = store.stories
    story_id = await stories.create(USER, GUILD, 77, "Once", SAMPLING)
    await _part(stories, story_id, None, " upon")
    assert await stories.delete(story_id) and not await stories.delete(story_id)
    assert await stories.get(story_id) is None
    assert await _part(stories, story_id, None, " late") is None  # a part finished after deletion is dropped
    assert await execute(store, "SELECT count(*) FROM story_parts") == [(0,)]
    assert await store.get(Scope.USER, USER) == {"temperature": 0.5}


async def test_retention_prunes_only_stories_older_than_the_period(store) -> None:
    now = [1_000_000_000.0]
    stories = SqlStoryStore(store.database, clock=lambda: now[0])
    old = await stories.create(USER, GUILD, 77, "Old", SAMPLING)
    now[0] += 10 * DAY_S
    fresh = await stories.create(USER, GUILD, 77, "Fresh", SAMPLING)
    now[0] += 5 * DAY_S
    assert await stories.prune(0) == 0  # 0 keeps every story
    assert await stories.prune(7) == 1
    assert await stories.get(old) is None and (await stories.get(fresh)).opening == "Fresh"


async def test_threads_are_allowed_until_a_server_forbids_them(store) -> None:
    assert await store.stories.threads_allowed(GUILD)
    await store.stories.set_threads_allowed(GUILD, False)
    assert not await store.stories.threads_allowed(GUILD)


async def test_text_with_nul_and_lone_surrogates_is_kept_alike_on_both_databases(store) -> None:
    """PostgreSQL refuses NUL in text, and neither database takes a lone surrogate: both become U+FFFD."""
    story_id = await store.stories.create(USER, GUILD, 77, "Once\x00 upon \ud800", SAMPLING)
    await _part(store.stories, story_id, None, " a\x00time")
    assert (await store.stories.get(story_id)).text == "Once\ufffd upon \ufffd a\ufffdtime"


async def test_a_part_keeps_the_precision_that_wrote_it_and_older_parts_have_none(store) -> None:
    stories = store.stories
    story_id = await stories.create(USER, GUILD, 77, "Once", SAMPLING)
    older = await _part(stories, story_id, None, " upon")  # kept before precisions were recorded
    newer = await stories.add_part(
        story_id,
        parent_id=older.id,
        author_id=USER,
        added="",
        settings=SAMPLING,
        seed=2,
        text=" a time",
        stop_reason="length",
        precision="int8",
    )
    assert newer.precision == "int8"
    story = await stories.get(story_id)
    assert [(p.precision, p.settings) for p in story.chain] == [("", SAMPLING), ("int8", SAMPLING)]
