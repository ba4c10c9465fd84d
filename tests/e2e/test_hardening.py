"""Issue 18 through the stand-in: modified-client input, interaction tokens in the DEBUG log,
invisible prompts and Discord markup in a story's opening."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from playground.standin.world import GENERAL_CHANNEL_ID
from tests.e2e.harness import Rig
from tests.e2e.replies import (
    PROMPT,
    buttons,
    description,
    eventually,
    explained,
    finished,
    private_replies,
    private_reply,
    story_started,
    texts,
    versions,
)

UNSHOWN = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]")
MARKUP = re.compile(r"<(?:@[!&]?\d+|#\d+|t:-?\d+(?::\w)?|/[\w -]+:\d+|a?:\w+:\d+)>")
"""Discord's `<…>` markup, unescaped: it would render as a mention, a channel, a timestamp…"""


def log_since(rig: Rig, start: int) -> str:
    return rig.bot.log()[start:]


async def test_a_prompt_sent_as_a_number_is_refused_clearly_without_a_traceback(driver, rig, reader):
    """A modified client sends `prompt: 5`; the bot says so privately and logs no traceback."""
    start = len(rig.bot.log())
    interaction = await driver.modified_command(reader, "story", [{"name": "prompt", "type": 3, "value": 5}])
    assert interaction["status"] == "acknowledged"
    reply = await private_reply(driver, interaction["id"])
    assert reply["content"].startswith("The prompt must be text"), reply["content"]
    assert "Traceback" not in log_since(rig, start)


async def test_an_unknown_subcommand_is_refused_with_one_log_line_naming_it(driver, rig, reader):
    """`/settings drop` (no such subcommand): a clear refusal, one log line naming the command, not "a button"."""
    start = len(rig.bot.log())
    interaction = await driver.modified_command(reader, "settings", [{"name": "drop", "type": 1, "options": []}])
    reply = await private_reply(driver, interaction["id"])
    assert reply["content"].startswith("I don't have that command."), reply["content"]
    log = log_since(rig, start)
    assert "Traceback" not in log and "a button" not in log
    assert len([line for line in log.splitlines() if "refused unknown command /settings drop" in line]) == 1


async def test_interaction_tokens_never_appear_in_the_debug_log(driver, rig, reader):
    """Every interaction token the stand-in issued is absent from the DEBUG log (before: 9 of 9 were there)."""
    story = await finished(driver, (await story_started(driver, reader, PROMPT, length=4))["original_message_id"])
    await driver.click(reader, story["id"], buttons(story)["Regenerate"]["custom_id"])
    await driver.command(reader, "settings set", {"temperature": 0.8})
    await driver.command(reader, "settings show")
    await finished(driver, story["id"])
    tokens = rig.standin_thread.call(lambda: list(rig.standin.state.interactions._by_token))
    log = rig.bot.log()
    leaked = [token for token in tokens if token in log]
    print(f"\n{len(leaked)} of {len(tokens)} interaction tokens found in the DEBUG log")
    assert "DEBUG" in log and tokens
    assert leaked == []


@pytest.mark.parametrize("prompt", ["\ufeff\ufeff", "\u3164\u115f", "\u200b\u2060\u200d", "\u202e\U000e0041"])
async def test_a_prompt_of_only_invisible_characters_is_refused(driver, reader, prompt):
    interaction = await story_started(driver, reader, prompt)
    reply = await private_reply(driver, interaction["id"])
    assert "only invisible characters" in reply["content"]


async def test_direction_tag_characters_and_discord_markup_in_the_opening_are_not_rendered(driver, reader):
    """The opening is shown as typed text: no bidi override or tag characters, no live `<…>` markup."""
    opening = f"Hi \u202eevil\u202c <@&123> <#{GENERAL_CHANNEL_ID}> <t:0:R> \U000e0068\U000e0069 end"
    story = await finished(driver, (await story_started(driver, reader, opening, length=4))["original_message_id"])
    shown = [text for version in versions(story) for text in texts(version)]
    assert all(not UNSHOWN.search(text) for text in shown)
    assert [match.group(0) for text in shown for match in MARKUP.finditer(text)] == []
    assert "evil" in description(story) and "t:0:R" in description(story)


async def test_why_caches_under_the_data_folder_and_writes_nothing_beside_the_model(driver, rig, reader, e2e_model_dir):
    """Item 8: the model directory may be read-only, so r's cache lives next to the database."""
    before = sorted(path.name for path in e2e_model_dir.iterdir())
    await explained(driver, reader, "The fox said to the crow")
    assert sorted(path.name for path in e2e_model_dir.iterdir()) == before
    cache = Path(rig.config["database"]["path"]).parent / "cache"
    assert list(cache.glob("phi_std-*.pt"))


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


async def answer_of(driver, interaction_id: str, timeout: float = 30.0) -> str:
    """The private answer's text, once a deferred "thinking…" has been filled."""
    replies = await eventually(
        lambda: private_replies(driver, interaction_id),
        lambda found: bool(found) and bool(found[0]["content"]),
        timeout=timeout,
        what="private answer",
    )
    return replies[0]["content"]


async def test_settings_answer_in_time_while_another_process_holds_the_database_lock(driver, rig):
    """Item 2: a 12 s lock held by another process; every /settings is acknowledged in time (no breach),
    writes say "busy" and change nothing, reads answer; once the lock is gone, writes work again."""
    users = [rig.new_reader() for _ in range(4)]
    database = rig.config["database"]["path"]
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_LOCK, database, "12", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"locked\n"
        sets = [driver.command(user, "settings set", {"temperature": 1.3}) for user in users]
        shows = [driver.command(user, "settings show") for user in users]
        interactions = await asyncio.gather(*sets, *shows)
        assert [i["status"] for i in interactions] == ["acknowledged"] * len(interactions)
        answers = [await answer_of(driver, i["id"]) for i in interactions]
        print(f"\nunder a 12 s lock: {answers[0]!r} / {answers[-1][:40]!r}")
        assert all(a.startswith("Preferences are busy. Please try again in a moment.") for a in answers[: len(users)])
        assert all(a.startswith("**Your settings**") and "1.3" not in a for a in answers[len(users) :])
    finally:
        await holder.wait()
    again = await driver.command(users[0], "settings set", {"temperature": 1.3})
    assert (await answer_of(driver, again["id"])).startswith("Saved for you")
