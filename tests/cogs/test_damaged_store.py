"""Issue 18, item 3 at run time: the preferences database is damaged under a running bot.

/story still writes, on the server's and the bot's defaults, and says that the user's own settings
are unavailable; /settings set does not say "Saved" for a write that cannot be read back. (Before
the fix every /story answered "Preferences are unavailable" and nothing was written.)
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cogs.settings import SettingsCog
from cogs.story import PERSONAL_UNAVAILABLE, StoryCog
from core.config import Config, DiscordConfig, LimitsConfig, ServiceConfig
from core.settings import DecodingSettings
from model.service import ModelService
from store import Scope, SqlitePreferencesStore
from tests.discord_fakes import FakeInteraction
from tests.store.conftest import sqlite_writer
from tests.store.test_corruption import fill, root_pages, scribble

USER, GUILD = 5, 77


@pytest.fixture
async def damaged_bot(tiny_loaded, tmp_path):
    """A bot whose database (300 users' settings, one server's) loses its user table's pages once open."""
    config = Config(
        service=ServiceConfig(batch_window_ms=0.0, request_timeout_s=60),
        limits=LimitsConfig(max_prompt_tokens=64, max_new_tokens=200),
        discord=DiscordConfig(edit_interval_s=0.1),
        defaults=DecodingSettings(strategy="sampling", max_new_tokens=12),
    )
    path = tmp_path / "prefs.db"
    await fill(path)
    service = ModelService(tiny_loaded, config)
    await service.start()
    store = await SqlitePreferencesStore.open(
        path, config_defaults=config.defaults, max_new_tokens_cap=config.limits.max_new_tokens
    )
    scribble(path, root_pages(path, "user_settings"))
    sqlite_writer(store).execute("PRAGMA shrink_memory")  # start-up's quick_check left every page in its cache
    yield SimpleNamespace(config=config, service=service, preferences=store)
    await service.close()
    await store.close()


async def test_story_goes_on_with_the_servers_defaults_and_says_personal_settings_are_unavailable(damaged_bot):
    cog = StoryCog(damaged_bot)  # type: ignore[arg-type]
    interaction = FakeInteraction(USER, GUILD)
    await cog.story.callback(cog, interaction, prompt="Once upon a time", length=10, seed=4)
    assert not interaction.named("delete_original"), "the story was withdrawn"
    embed = interaction.named("edit_original")[-1].kwargs["embed"]
    assert embed.description.startswith("**Once upon a time**") and len(embed.description) > 22
    assert PERSONAL_UNAVAILABLE in embed.footer.text
    assert "temperature=0.6" in embed.footer.text and "max_new_tokens=10" in embed.footer.text  # server, command


async def test_settings_set_is_not_acknowledged_when_it_was_not_stored(damaged_bot):
    cog = SettingsCog(damaged_bot)  # type: ignore[arg-type]
    interaction = FakeInteraction(USER, GUILD)
    await cog._save(interaction, Scope.USER, USER, {"temperature": 1.5}, "Saved for you")
    answers = [call.kwargs["content"] for call in interaction.named("send_message", "followup")]
    assert answers and not any("Saved for you" in answer for answer in answers), answers
