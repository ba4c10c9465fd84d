"""The playground page in headless Chromium, driving the real bot: type /story, see it, press a button, /why.

The second test saves a screenshot of the page after /story and /why to artifacts/playground.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, Rig

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = ROOT / "artifacts" / "playground.png"
WHY_SCREENSHOTS = {"bars": ROOT / "artifacts" / "why-bars.png", "attention": ROOT / "artifacts" / "why-attention.png"}
CHANNEL = "stories"
"""Only these tests write here, so the page shows their messages alone."""
LAST_REPLY = "#messages > article.message:last-of-type"
FINISHED_STORY = f"{LAST_REPLY}:has(button:has-text('Continue'):not([disabled]))"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser)"),
]


@pytest.fixture
async def page(rig: Rig) -> AsyncIterator:
    """The playground page as alice, in #stories; it must raise no script error."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = await browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(30_000)
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        await tab.goto(rig.standin.url)
        await tab.wait_for_selector(".bot-status.online")
        await tab.locator("#channels button", has_text=f"# {CHANNEL}").click()
        await tab.wait_for_selector(f"#channel-name:has-text('{CHANNEL}')")
        yield tab
        await browser.close()
        assert errors == []


async def run(page, command: str) -> None:
    """Type a command in the box, press Enter, and wait for the bot's reply to appear below the others."""
    shown = await page.locator("#messages > article.message").count()
    await page.locator("#command-input").fill(command)
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        "(shown) => document.querySelectorAll('#messages > article.message').length > shown", arg=shown
    )


async def test_story_typed_in_the_page_appears_and_continue_extends_it(page):
    """/story typed in the box shows the streamed reply; pressing Continue writes more into it."""
    await run(page, "/story prompt: Once upon a time there lived a king strategy: greedy length: 12")
    story = page.locator(FINISHED_STORY)
    await story.wait_for()
    assert (await story.locator("strong").first.inner_text()) == "Once upon a time there lived a king"
    before = await story.inner_text()
    await story.locator("button:has-text('Continue')").click()
    await page.wait_for_function(
        "(before) => { const m = document.querySelector('#messages > article.message:last-of-type');"
        " const go = [...m.querySelectorAll('button')].find(b => b.innerText.includes('Continue'));"
        " return m.innerText !== before && go && !go.disabled; }",
        arg=before,
    )
    assert len(await page.locator(LAST_REPLY).inner_text()) > len(before)


async def test_story_and_why_in_the_page_are_shown_and_screenshotted(page):
    """/story then /why: the story and the bars with their chart appear; the page is saved as a screenshot."""
    await run(page, "/story prompt: The fox said to the crow length: 30")
    await page.locator(FINISHED_STORY).wait_for()
    await run(page, "/why prompt: The fox said to the crow")
    chart = page.locator(f"{LAST_REPLY} img.embed-image")
    await chart.wait_for()
    await page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=await chart.element_handle())
    assert "Why this next word?" in await page.locator(LAST_REPLY).inner_text()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.set_viewport_size({"width": 1280, "height": 1700})
    await page.eval_on_selector("#messages", "list => { list.scrollTop = list.scrollHeight; }")
    await page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\nscreenshot: {SCREENSHOT}")
    await page.locator(LAST_REPLY).screenshot(path=str(WHY_SCREENSHOTS["bars"]))
    assert await page.locator(f"{LAST_REPLY} img").count() == 1  # the chart, inside the embed
    print(f"screenshot: {WHY_SCREENSHOTS['bars']}")


NARROW_SCREENSHOT = ROOT / "artifacts" / "playground-420.png"


async def test_page_at_420_px_keeps_a_readable_story_column_and_text_buttons(page):
    """At a phone's width the sidebar folds above the channel, the story is not one word wide,
    and the buttons show text symbols rather than emoji (which need an emoji font)."""
    await page.set_viewport_size({"width": 420, "height": 900})
    await run(page, "/story prompt: Once upon a time there lived a king strategy: greedy length: 20")
    story = page.locator(FINISHED_STORY)
    await story.wait_for()
    sidebar = await page.locator(".sidebar").bounding_box()
    channel = await page.locator(".channel").bounding_box()
    description = await story.locator(".embed-description").bounding_box()
    assert sidebar["y"] + sidebar["height"] <= channel["y"] + 1  # above, not beside
    assert channel["width"] >= 400 and description["width"] >= 300
    assert await page.evaluate("document.documentElement.scrollWidth") <= 420  # nothing sticks out
    overflowing = await story.locator(".embed-description").evaluate("node => node.scrollWidth > node.clientWidth")
    assert not overflowing  # a story without spaces wraps too
    labels = [text.strip() for text in await story.locator("button").all_inner_texts()]
    assert labels == ["+ Continue", "↻ Regenerate", "■ Stop", "◀", "▶", "Why?", "Details", "# Thread", "Delete"]
    NARROW_SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(NARROW_SCREENSHOT), full_page=True)
    print(f"\nscreenshot: {NARROW_SCREENSHOT}")


HELP_SCREENSHOT = ROOT / "artifacts" / "help.png"
WHY_BUTTON_SCREENSHOT = ROOT / "artifacts" / "why-button.png"
WHY_BUTTON_CHART = ROOT / "artifacts" / "why-button-chart.png"
DISCORD_EMBED_IMAGE_PX = 490
"""About how wide Discord shows an embed's image (the embed is 520 px with its padding)."""


async def screenshot(locator, path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    await locator.screenshot(path=str(path))
    assert path.stat().st_size > 5_000
    print(f"\nscreenshot: {path}")


async def test_help_and_a_long_storys_why_answer_are_shown_at_discords_width_and_screenshotted(page):
    """As carol (her own rate limit): /help is a private page; a long story's Why? says which part
    it explains, and its chart is shown at its own size, no wider than Discord shows an embed image."""
    await page.select_option("#user-switcher", label="Carol")
    await run(page, "/help")
    help_reply = page.locator(LAST_REPLY)
    await help_reply.locator(".embed").wait_for()
    text = await help_reply.inner_text()
    assert "Only you can see this" in text and "Buttons under a story" in text and "Privacy" in text
    await page.set_viewport_size({"width": 1280, "height": 1400})
    await screenshot(help_reply, HELP_SCREENSHOT)

    # Greedy: a sampled story on the random tiny model may end early (it did once, at 12 words), and
    # then Why? explains the whole story instead of its last part.
    await run(
        page, "/story prompt: Once upon a time there lived a king who had three daughters strategy: greedy length: 300"
    )
    story = page.locator(FINISHED_STORY)
    await story.wait_for()
    shown = await page.locator("#messages > article.message").count()
    await story.locator("button:has-text('Why?')").click()
    answer = page.locator("#messages > article.message").nth(shown)  # the press's own reply, below the rest
    chart = answer.locator("img.embed-image")
    await chart.wait_for()
    await page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=await chart.element_handle())
    answer_text = await answer.inner_text()
    assert "Explained: the story's last" in answer_text and "Most important:" in answer_text
    natural, shown_width = await chart.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
    assert natural <= 500 and shown_width <= DISCORD_EMBED_IMAGE_PX and shown_width >= 0.95 * min(natural, 488)
    await page.set_viewport_size({"width": 1280, "height": 2400})  # the whole answer in view, as tall as it is
    await answer.scroll_into_view_if_needed()
    await screenshot(answer, WHY_BUTTON_SCREENSHOT)
    await screenshot(chart, WHY_BUTTON_CHART)


# Last in the file: the page's user may start 6 requests a minute (tests/e2e/harness.py), and the
# tests above use 5.
async def test_why_attention_view_shows_both_pictures_inside_embeds_and_is_screenshotted(page):
    """/why in the attention view: every picture sits in an embed (none loose below it); the reply is
    saved as a screenshot (the bars view's is saved by the /story and /why test)."""
    view = "attention"
    await run(page, f"/why prompt: The fox said to the crow view: {view}")
    reply = page.locator(LAST_REPLY)
    charts = reply.locator(".embed img.embed-image")
    await charts.nth(0).wait_for()
    expected = 2
    await page.wait_for_function(
        "([selector, n]) => { const imgs = document.querySelectorAll(selector);"
        " return imgs.length === n && [...imgs].every(img => img.complete && img.naturalWidth > 0); }",
        arg=[f"{LAST_REPLY} .embed img.embed-image", expected],
    )
    assert await reply.locator("img").count() == expected  # no picture outside the embeds
    path = WHY_SCREENSHOTS[view]
    path.parent.mkdir(exist_ok=True)
    await page.set_viewport_size({"width": 1280, "height": 1900})
    await reply.scroll_into_view_if_needed()
    await reply.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    print(f"\nscreenshot: {path}")
