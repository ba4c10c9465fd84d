"""SIGTERM, as `docker stop`, systemd and the playground send it: a clean, bounded shutdown."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

from tests.e2e.harness import Rig
from tests.e2e.replies import LONG_STORY, PROMPT, buttons, footer, reply_where, running, story_started
from tests.e2e.test_settings import answer

CUT = "The bot is restarting: this part was not kept"


async def test_sigterm_tells_running_stories_keeps_every_saved_setting_and_exits_0(driver, rig: Rig, reader):
    temperatures = [0.5, 0.6, 0.7, 0.9]
    for temperature in temperatures:
        saved = await answer(driver, reader, "settings set", {"temperature": temperature})
        assert saved["content"].startswith("Saved for you")
    story = await story_started(driver, reader, PROMPT, **LONG_STORY)
    await running(driver, story["original_message_id"])
    mark = rig.standin_thread.call(lambda: rig.standin.state.events.last_seq)
    started = time.monotonic()
    rig.bot.process.send_signal(signal.SIGTERM)
    code = rig.bot.wait(timeout=30)
    took = time.monotonic() - started
    try:
        assert code == 0, rig.bot.log_tail()
        assert took < 15
        message = await reply_where(
            driver, story["original_message_id"], lambda m: CUT in footer(m), what="story cut by the restart"
        )
        # The lost part is not shown; the story's buttons are its own again (they work after the restart).
        shown = buttons(message)
        assert shown["Stop"].get("disabled") and not shown["Continue"].get("disabled")
        database = Path(rig.config["database"]["path"])
        assert not Path(f"{database}-wal").exists() and not Path(f"{database}-shm").exists()
        user_id = rig.standin_thread.call(lambda: rig.standin.state.world.find_user(reader).id)
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "SELECT value FROM user_settings WHERE user_id = ? AND field = 'temperature'", (user_id,)
            ).fetchall()
        assert [json.loads(value) for (value,) in rows] == [temperatures[-1]]  # the last acknowledged write
        assert "SIGTERM received: shutting down" in rig.bot.log() and "stopped cleanly" in rig.bot.log()
    finally:
        rig.bot.start()
        rig.wait_until_ready(after=mark)
