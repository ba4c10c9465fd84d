"""Issue 18, item 1: a model that will not load ends `python bot.py` at once, with one clear message.

Before the fix the preferences store was opened first and never closed, so its database thread
kept the process alive for ever after the error; a truncated weights file printed a raw traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, bot_config, write_config

EXIT_WITHIN_S = 60.0
"""Generous for a 2-core machine importing torch; a hang is what this catches (it ran until killed)."""


def break_model(kind: str, good: Path, target: Path) -> Path:
    """A copy of the tiny model broken in one way (or no folder at all)."""
    if kind == "missing":
        return target / "no-such-model"
    model = target / kind
    shutil.copytree(good, model)
    if kind == "truncated weights":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif kind == "wrong architecture":
        config = json.loads((model / "config.json").read_text())
        config.update(model_type="t5", architectures=["T5ForConditionalGeneration"])
        (model / "config.json").write_text(json.dumps(config))
    elif kind == "tokenizer missing":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
            (model / name).unlink(missing_ok=True)
    return model


@pytest.mark.parametrize("kind", ["missing", "truncated weights", "wrong architecture", "tokenizer missing"])
def test_a_broken_model_ends_the_bot_with_one_message_and_status_1(kind, tiny_model_dir, tmp_path):
    model = break_model(kind, tiny_model_dir, tmp_path)
    database = tmp_path / "data" / "prefs.db"
    config_path = write_config(tmp_path, bot_config(model, database) | {"log_level": "INFO"})
    env = os.environ | {
        "DISCORD_TOKEN": "not-a-real-token",
        "HF_HUB_OFFLINE": "1",
        "TALEWEAVER_CONFIG": str(config_path),
    }
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bot.py")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXIT_WITHIN_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"bot.py with a {kind} model was still running after {EXIT_WITHIN_S:g} s")
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    print(f"\n{kind}: exit {done.returncode} in {elapsed:.1f} s: {output.strip().splitlines()[-1]}")
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert str(model) in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    assert not database.exists(), "the store was opened although the model could not load"


def test_a_damaged_database_ends_the_bot_with_one_message_and_status_1_leaving_it_untouched(tiny_model_dir, tmp_path):
    """Item 3: `dd if=/dev/urandom of=copy.db bs=4096 seek=2 count=2 conv=notrunc`, then start the bot."""
    import asyncio

    from tests.store.test_corruption import fill, scribble

    database = tmp_path / "data" / "prefs.db"
    database.parent.mkdir(parents=True)
    asyncio.run(fill(database))
    scribble(database, [3, 4])
    before = database.read_bytes()
    config_path = write_config(tmp_path, bot_config(tiny_model_dir, database) | {"log_level": "INFO"})
    env = os.environ | {"DISCORD_TOKEN": "not-a-real-token", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bot.py"), "--config", str(config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_S,
    )
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    print(f"\ndamaged database: exit {done.returncode} in {elapsed:.1f} s: {output.strip().splitlines()[-1]}")
    assert done.returncode == 1, output
    assert "is damaged: SQLite's integrity check failed" in output and "Traceback" not in output
    assert database.read_bytes() == before
