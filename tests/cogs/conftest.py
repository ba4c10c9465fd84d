"""Fixtures of the cog tests: the real model service (tiny GPT-2) and a real SQLite store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cogs.story import StoryCog
from core.config import Config, DiscordConfig, LimitsConfig, ServiceConfig
from core.settings import DecodingSettings
from model.service import ModelService
from store import SqlitePreferencesStore

OWNER, STRANGER = 1001, 2002


@pytest.fixture
async def story_cog(tiny_loaded, tmp_path):
    config = Config(
        service=ServiceConfig(batch_window_ms=0.0, request_timeout_s=60),
        limits=LimitsConfig(max_prompt_tokens=64, max_new_tokens=200),
        discord=DiscordConfig(edit_interval_s=0.1),
        defaults=DecodingSettings(strategy="sampling", max_new_tokens=40),
    )
    service = ModelService(tiny_loaded, config)
    await service.start()
    store = await SqlitePreferencesStore.open(
        tmp_path / "prefs.db", config_defaults=config.defaults, max_new_tokens_cap=config.limits.max_new_tokens
    )
    bot = SimpleNamespace(config=config, service=service, preferences=store)
    yield StoryCog(bot)  # type: ignore[arg-type]
    await service.close()
    await store.close()


@pytest.fixture
def cog(story_cog):
    return story_cog
