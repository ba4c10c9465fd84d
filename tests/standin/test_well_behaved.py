"""A well-behaved discord.py bot passes with no breach, through every kind of interaction callback."""

from __future__ import annotations

import io

import aiohttp
import discord
import pytest

from playground.standin import StandIn
from tests.standin.bots import ScriptedBot

PNG = b"\x89PNG\r\n\x1a\n" + b"picture" * 100


async def post(driver: aiohttp.ClientSession, body: dict, status: int = 201) -> dict:
    response = await driver.post("/_playground/interactions", json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def messages(driver: aiohttp.ClientSession, viewer: str | None = None) -> list[dict]:
    query = f"?as={viewer}" if viewer else ""
    response = await driver.get(f"/_playground/channels/general/messages{query}")
    return (await response.json())["messages"]


async def test_defer_streamed_edits_and_follow_up_with_a_file_pass_without_breach(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    async def tell(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        for text in ("Once", "Once upon", "Once upon a time."):
            await interaction.edit_original_response(content=text)
        await interaction.followup.send("The picture:", file=discord.File(io.BytesIO(PNG), "tale.png"))

    bot.behaviour = tell
    await post(driver, {"type": "command", "user": "bob", "command": "act", "options": {"text": "go"}})
    await standin.wait_for(lambda e: e.kind == "message_create" and e.data["content"] == "The picture:")

    story, picture = await messages(driver)
    assert story["content"] == "Once upon a time." and story["type"] == 20
    assert [version["content"] for version in story["history"]] == ["", "Once", "Once upon"]
    assert story["history"][0]["flags"] & 128, "the deferred message starts as 'thinking'"
    assert story["interaction_metadata"]["name"] == "act"
    (attachment,) = picture["attachments"]
    assert attachment["filename"] == "tale.png" and attachment["content_type"] == "image/png"
    async with driver.get(attachment["url"]) as response:
        assert await response.read() == PNG
    assert standin.breaches() == []


async def test_first_follow_up_after_a_defer_fills_the_thinking_message(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    async def defer_then_follow_up(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("first")
        await interaction.followup.send("second", ephemeral=True)

    bot.behaviour = defer_then_follow_up
    await post(driver, {"type": "command", "user": "bob", "command": "act"})
    await standin.wait_for(lambda e: e.kind == "message_create" and e.data["content"] == "second")

    first, second = await messages(driver, "bob")
    assert first["content"] == "first" and first["flags"] == 64, "ephemeral like the defer, no longer thinking"
    assert second["visible_to"] == first["visible_to"] == str(standin.state.world.find_user("bob").id)
    assert await messages(driver, "carol") == []
    assert standin.breaches() == []


async def test_button_click_answered_with_an_update_edits_the_message(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    view = discord.ui.View()
    button = discord.ui.Button(label="Continue", custom_id="continue")

    async def on_click(interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"continued by {interaction.user.name}", view=None)

    button.callback = on_click
    view.add_item(button)
    bot.behaviour = lambda i: i.response.send_message("chapter one", view=view)
    await post(driver, {"type": "command", "user": "bob", "command": "act", "wait": True})
    (message,) = await messages(driver)
    assert message["components"][0]["components"][0]["label"] == "Continue"

    click = {"type": "component", "user": "carol", "message_id": message["id"], "custom_id": "continue", "wait": True}
    result = await post(driver, click)
    assert result["interaction"]["response_type"] == "update"
    (edited,) = await messages(driver)
    assert edited["content"] == "continued by carol" and edited["components"] == []
    assert standin.breaches() == []


async def test_button_click_deferred_then_edited_edits_the_message(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    view = discord.ui.View()
    button = discord.ui.Button(label="Again", custom_id="again")

    async def on_click(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="retold")

    button.callback = on_click
    view.add_item(button)
    bot.behaviour = lambda i: i.response.send_message("told", view=view)
    await post(driver, {"type": "command", "user": "bob", "command": "act", "wait": True})
    (message,) = await messages(driver)
    await post(driver, {"type": "component", "user": "bob", "message_id": message["id"], "custom_id": "again"})
    await standin.wait_for(lambda e: e.kind == "message_update" and e.data["content"] == "retold")
    assert standin.breaches() == []


async def test_autocomplete_choices_come_back_to_the_driver(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    bot.autocomplete_choices = [discord.app_commands.Choice(name=n, value=n.lower()) for n in ("Red", "Green", "Reed")]
    body = {"type": "autocomplete", "user": "bob", "command": "pick", "options": {"colour": "re"}, "focused": "colour"}
    result = await post(driver, body)
    assert result["interaction"]["response_type"] == "autocomplete"
    assert result["interaction"]["choices"] == [
        {"name": "Red", "value": "red"},
        {"name": "Green", "value": "green"},
        {"name": "Reed", "value": "reed"},
    ]
    assert standin.breaches() == []


async def test_modal_opened_by_a_command_is_submitted_and_answered(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    class Premise(discord.ui.Modal, title="Your premise"):
        premise = discord.ui.TextInput(label="Premise", custom_id="premise", style=discord.TextStyle.paragraph)

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"A tale of {self.premise.value}", ephemeral=True)

    bot.behaviour = lambda i: i.response.send_modal(Premise(custom_id="premise-modal"))
    opened = await post(driver, {"type": "command", "user": "alice", "command": "act", "wait": True})
    assert opened["interaction"]["modal"]["title"] == "Your premise"

    body = {"type": "modal", "user": "alice", "custom_id": "premise-modal", "values": {"premise": "a brave fox"}}
    submitted = await post(driver, body | {"wait": True})
    assert submitted["interaction"]["response_type"] == "message"
    (reply,) = await messages(driver, "alice")
    assert reply["content"] == "A tale of a brave fox" and reply["flags"] == 64
    await post(driver, body, status=404)  # the modal is closed once submitted
    assert standin.breaches() == []


async def test_slash_command_options_reach_the_bot_typed(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession
):
    result = await post(
        driver,
        {
            "type": "command",
            "user": "bob",
            "command": "/pick",
            "options": {"colour": "teal", "count": "3"},
            "wait": True,
        },
    )
    assert result["interaction"]["status"] == "acknowledged"
    (reply,) = await messages(driver)
    assert reply["content"] == "3 × teal"


@pytest.mark.parametrize(
    "options, error",
    [
        ({"count": 2}, "option 'colour' is required"),
        ({"colour": "red", "count": 9}, "option 'count' must lie between 1 and 5"),
        ({"colour": "red", "count": "many"}, "option 'count' needs a whole number"),
        ({"colour": "red", "size": 3}, "/pick has no option size"),
    ],
    ids=["missing", "out_of_range", "wrong_type", "unknown"],
)
async def test_options_discord_would_refuse_never_reach_the_bot(
    standin: StandIn, bot: ScriptedBot, driver: aiohttp.ClientSession, options: dict, error: str
):
    result = await post(driver, {"type": "command", "user": "bob", "command": "pick", "options": options}, status=400)
    assert error in result["error"]
    assert not any(event.kind == "interaction_update" for event in standin.state.events.since(0))
