"""The web page in Debian's Chromium: commands typed with suggestions, replies, buttons, modals, users."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import discord
import pytest

from playground.standin import StandIn
from tests.standin.bots import ScriptedBot

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make browser)"),
]


@pytest.fixture
async def page(standin: StandIn, bot: ScriptedBot) -> AsyncIterator:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = await browser.new_page()
        tab.set_default_timeout(5000)
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        await tab.goto(standin.url)
        await tab.wait_for_selector(".bot-status.online")
        yield tab
        await browser.close()
        assert errors == []


async def test_typing_slash_suggests_commands_then_the_bots_autocomplete_choices(page, bot: ScriptedBot):
    bot.autocomplete_choices = [discord.app_commands.Choice(name=n, value=n.lower()) for n in ("Red", "Blue")]
    await page.locator("#command-input").type("/p")
    assert await page.locator("#suggestions li .name").all_inner_texts() == ["/pick"]
    await page.keyboard.press("Tab")
    await page.keyboard.type("colour: re")
    await page.wait_for_selector("#suggestions li:has-text('Red')")
    assert await page.locator("#suggestions li:has-text('Blue')").count() == 0


async def test_command_typed_in_the_box_shows_the_reply(page, bot: ScriptedBot):
    await page.locator("#command-input").type("/pick colour: teal count: 2")
    await page.keyboard.press("Enter")
    await page.wait_for_selector(".message .content:has-text('2 × teal')")
    assert await page.locator(".reply-to").first.inner_text() == "↱ Alice (moderator) used /pick"


async def test_refused_options_are_explained_under_the_box(page):
    await page.locator("#command-input").type("/pick colour: teal count: 9")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#composer-error:has-text('must lie between 1 and 5')")


async def test_button_press_updates_the_message_and_ephemeral_replies_stay_private(page, bot: ScriptedBot):
    view = discord.ui.View()
    button = discord.ui.Button(label="Continue", custom_id="continue")

    async def on_click(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"only for {interaction.user.name}", ephemeral=True)

    button.callback = on_click
    view.add_item(button)
    bot.behaviour = lambda i: i.response.send_message("**Chapter one**", view=view)
    await page.locator("#command-input").type("/act")
    await page.keyboard.press("Enter")
    await page.locator("button:has-text('Continue')").click()
    await page.wait_for_selector(".message:has-text('only for alice') .ephemeral-note")
    assert await page.locator(".content strong").first.inner_text() == "Chapter one"

    await page.select_option("#user-switcher", label="Carol")
    await page.wait_for_selector(".message:has-text('Chapter one')")
    assert await page.locator(".message:has-text('only for alice')").count() == 0


async def test_modal_opens_and_its_answer_reaches_the_bot(page, bot: ScriptedBot):
    class Premise(discord.ui.Modal, title="Your premise"):
        premise = discord.ui.TextInput(label="Premise", custom_id="premise")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"A tale of {self.premise.value}")

    bot.behaviour = lambda i: i.response.send_modal(Premise(custom_id="premise-modal"))
    await page.locator("#command-input").type("/act")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("dialog[open] h2:has-text('Your premise')")
    await page.locator("dialog input[name='premise']").fill("a brave fox")
    await page.locator("dialog button[type='submit']").click()
    await page.wait_for_selector(".message .content:has-text('A tale of a brave fox')")


async def test_breaches_appear_in_a_red_bar(page, bot: ScriptedBot):
    bot.behaviour = lambda i: i.response.send_message("x" * 2001)
    await page.locator("#command-input").type("/act")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#breaches-toggle:has-text('1 Discord rule broken')")
