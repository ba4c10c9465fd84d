"""`/help` and the presses nothing answers, on the real bot class with every extension loaded."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import discord
import pytest
from discord import app_commands

from bot import INITIAL_EXTENSIONS, TaleweaverBot
from cogs.help import BUTTON_GUIDE, COMMAND_GUIDE, help_embed
from cogs.story_view import ACTIONS, StoryButton
from cogs.unanswered import LEGACY_STORY, UNKNOWN_PRESS
from tests.cogs.conftest import OWNER, STRANGER
from tests.discord_fakes import FakeInteraction


@pytest.fixture
async def bot(story_cog):
    """The bot with all its extensions (not connected): the commands Discord would get."""
    base = story_cog.bot
    async with TaleweaverBot(base.config, base.service, base.preferences) as bot:  # its loop; never logs in
        for extension in INITIAL_EXTENSIONS:
            await bot.load_extension(extension)
        yield bot
        for extension in INITIAL_EXTENSIONS:
            await bot.unload_extension(extension)


def subnames(command: app_commands.Command | app_commands.Group) -> set[str]:
    if isinstance(command, app_commands.Group):
        return {sub.name for sub in command.commands}
    return {param.name + ":" for param in command.parameters}


async def test_help_is_private_and_fits_discords_limits(bot) -> None:
    interaction = FakeInteraction(OWNER)
    await bot.get_cog("HelpCog").help.callback(bot.get_cog("HelpCog"), interaction)
    (call,) = interaction.calls
    embed = call.kwargs["embed"]
    assert call.name == "send_message" and call.kwargs["ephemeral"] is True
    assert len(embed) <= 6000 and all(len(field.value) <= 1024 for field in embed.fields)
    names = [field.name for field in embed.fields]
    assert names == [
        "Commands",
        "Buttons under a story",
        "Where settings come from",
        "What is kept, and for how long",
        "Privacy",
    ]
    assert "90 days" in embed.fields[3].value


async def test_help_names_every_command_and_only_commands_that_exist(bot) -> None:
    """Both ways: each registered command is in the guide, each name the guide gives is registered,
    and the subcommands or options it names in backticks are that command's own."""
    registered = {command.name: command for command in bot.tree.get_commands()}
    assert set(COMMAND_GUIDE) == set(registered)
    for name, text in COMMAND_GUIDE.items():
        named = set(re.findall(r"`([a-z-]+:?)`", text))
        assert named <= subnames(registered[name]), (name, named - subnames(registered[name]))
        if isinstance(registered[name], app_commands.Group):
            assert named == subnames(registered[name]), name


def test_help_describes_every_story_button_by_its_label() -> None:
    text = (
        help_embed(
            SimpleNamespace(
                database=SimpleNamespace(story_retention_days=0), limits=SimpleNamespace(max_prompt_tokens=200)
            )
        )
        .fields[1]
        .value
    )  # noqa: E501
    assert list(BUTTON_GUIDE) == list(ACTIONS)
    bold = set(re.findall(r"\*\*(.+?)\*\*", text))
    assert bold == {StoryButton.STYLES[action][0] for action in ACTIONS}
    assert "last 200 tokens" in text


def component(custom_id: str, user: int = OWNER, message_id: int = 77) -> FakeInteraction:
    interaction = FakeInteraction(user, type=discord.InteractionType.component)
    interaction.data = {"custom_id": custom_id, "component_type": 2}
    interaction.message = SimpleNamespace(id=message_id)
    return interaction


async def test_a_press_nothing_handles_gets_a_private_answer(bot) -> None:
    interaction = component("poll:vote:3")
    interaction.client = bot
    await bot.get_cog("Unanswered").on_interaction(interaction)
    (call,) = interaction.calls
    assert call.kwargs["ephemeral"] is True and call.kwargs["content"] == UNKNOWN_PRESS


async def test_a_story_button_or_a_live_view_is_left_to_its_handler(bot) -> None:
    for custom_id in ("story:continue:12", "live"):
        interaction = component(custom_id)
        interaction.client = bot
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="live", custom_id="live"))
        bot.add_view(view, message_id=77)
        await bot.get_cog("Unanswered").on_interaction(interaction)
        assert interaction.calls == [], custom_id


async def test_an_old_story_button_is_taken_away_for_its_owner_only(bot) -> None:
    owner = component(f"story:continue:boot:{OWNER}:n1")
    stranger = component(f"story:continue:boot:{OWNER}:n1", user=STRANGER)
    for interaction in (owner, stranger):
        interaction.client = bot
        await bot.get_cog("Unanswered").on_interaction(interaction)
    assert [c.name for c in owner.calls] == ["edit_message", "followup"]
    assert owner.calls[0].kwargs["view"] is None and owner.calls[1].kwargs["content"] == LEGACY_STORY
    assert [c.name for c in stranger.calls] == ["send_message"]


async def test_a_view_that_stops_itself_in_its_callback_is_still_its_presses_handler(bot) -> None:
    """discord.py runs the view's callback (a Confirm button stops its view, which leaves the store)
    before the listeners: whether a view answers is noted as the press is dispatched."""
    view = discord.ui.View(timeout=60)
    view.add_item(discord.ui.Button(label="Confirm", custom_id="confirm-77"))
    bot._connection.store_view(view, 77)  # as discord.py does for the message that carries it
    interaction = component("confirm-77")
    interaction.client = bot
    bot.dispatch("interaction", interaction)  # as discord.py does, after scheduling the view's callback
    view.stop()  # what the callback does first
    listeners = [task for task in asyncio.all_tasks() if task.get_name() == "discord.py: on_interaction"]
    await asyncio.gather(*listeners)
    assert interaction.calls == []
