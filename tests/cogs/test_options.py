"""The declared range of every slash option is the limit actually in force, so Discord's own client
stops a wrong value before it is sent; footers carry no Markdown that Discord would show as is."""

from __future__ import annotations

from types import SimpleNamespace

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from cogs.settings import SettingsCog
from cogs.story import StoryCog, StoryState, render_story
from cogs.why import WhyCog
from core.config import Config, LimitsConfig, ServiceConfig
from core.service import StopReason, StoryResult
from core.settings import FIELDS, SEED_MAX, DecodingSettings

CAP, PROMPT_TOKENS = 250, 64


def make_bot(cap: int = CAP, prompt_tokens: int = PROMPT_TOKENS) -> SimpleNamespace:
    config = Config(
        limits=LimitsConfig(max_new_tokens=cap, max_prompt_tokens=prompt_tokens),
        service=ServiceConfig(max_tokens_in_flight=max(8192, cap + prompt_tokens)),
        defaults=DecodingSettings(max_new_tokens=min(cap, 120)),
    )
    return SimpleNamespace(config=config, service=None, preferences=None)


def options(command: app_commands.Command) -> dict[str, app_commands.Parameter]:
    return {parameter.name: parameter for parameter in command.parameters}


def test_story_length_and_prompt_declare_the_bots_limits() -> None:
    story = options(StoryCog(make_bot()).story)
    assert (story["length"].min_value, story["length"].max_value) == (1, CAP)
    assert f"1-{CAP}" in story["length"].description
    assert story["prompt"].max_value == PROMPT_TOKENS * 16  # the longest prompt that could still fit
    assert f"{PROMPT_TOKENS} tokens" in story["prompt"].description
    assert "after sending" in story["prompt"].description  # tokens are counted by the bot, not Discord
    temperature = FIELDS["temperature"]
    assert (story["temperature"].min_value, story["temperature"].max_value) == (
        temperature.minimum,
        temperature.maximum,
    )
    assert (story["seed"].min_value, story["seed"].max_value) == (0, SEED_MAX)


def test_prompt_help_gives_one_character_count_only_discords() -> None:
    """Discord's client shows "1-2000 characters" beside the help: the help speaks of tokens and words."""
    for command in (StoryCog(make_bot(prompt_tokens=200)).story, WhyCog(make_bot(prompt_tokens=200)).why):
        prompt = options(command)["prompt"]
        assert "200 tokens (about 150 words)" in prompt.description and "character" not in prompt.description


def test_story_numbers_declare_no_maximum_a_client_would_show() -> None:
    from cogs.story_threads import StoryThreads

    replay = options(StoryCog(make_bot()).story)["replay"]
    delete = options(StoryThreads(make_bot()).delete)["story"]
    assert (replay.min_value, replay.max_value) == (1, None) and (delete.min_value, delete.max_value) == (1, None)


def test_why_prompt_declares_the_bots_limit() -> None:
    why = options(WhyCog(make_bot(prompt_tokens=100)).why)
    assert why["prompt"].max_value == 1600 and "100 tokens" in why["prompt"].description


def test_descriptions_fit_discords_100_characters() -> None:
    bot = make_bot(prompt_tokens=100_000)
    for command in (StoryCog(bot).story, WhyCog(bot).why):
        assert all(len(parameter.description) <= 100 for parameter in command.parameters)
    assert options(StoryCog(bot).story)["prompt"].max_value == 2000  # never above what Discord may send


async def test_every_settings_option_declares_the_range_in_force() -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    bot.config = make_bot().config
    cog = SettingsCog(bot)
    checked = 0
    for command in cog.walk_app_commands():
        if not isinstance(command, app_commands.Command):
            continue
        for name, parameter in options(command).items():
            spec = FIELDS.get(name)
            if spec is None or spec.choices is not None:
                continue
            expected_max = min(spec.maximum, CAP) if name == "max_new_tokens" else spec.maximum
            assert (parameter.min_value, parameter.max_value) == (spec.minimum, expected_max), command.qualified_name
            checked += 1
    assert checked == 19  # 8 numeric settings in set and in server set, and 3 limits


def test_narrowing_one_cog_leaves_another_cog_with_another_config_alone() -> None:
    first, second = StoryCog(make_bot(cap=100)), StoryCog(make_bot(cap=300))
    assert options(first.story)["length"].max_value == 100
    assert options(second.story)["length"].max_value == 300


@pytest.mark.parametrize("status", ["⏹️ stopped", "the end", "⚠️ `max_new_tokens` must be a whole number"])
def test_story_footer_has_no_markdown_and_puts_notes_on_their_own_lines(status: str) -> None:
    note = "`max_new_tokens` 600 was capped to 300 by the bot's limit."
    settings = DecodingSettings(strategy="greedy", max_new_tokens=300)
    state = StoryState(owner_id=1, guild_id=None, opening="Once", settings=settings, notes=(note,), text="Once upon")
    state.seeds.append(7)
    result = StoryResult("Once", " upon", 7, settings, 92, 1.4, StopReason.STOPPED)
    embed, _ = render_story(state, running=False, status=status, result=result)
    text = embed.footer.text
    assert "`" not in text and "**" not in text
    lines = text.split("\n")
    assert lines[1] == "92 tokens in 1.4 s · " + status.replace("`", "")
    assert lines[2] == "max_new_tokens 600 was capped to 300 by the bot's limit."
