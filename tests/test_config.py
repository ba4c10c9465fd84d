"""config.yaml: the shipped file is valid, and every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from appconfig import ROOT, ConfigError, load_config


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    assert config.limits.max_prompt_tokens > 0
    assert config.defaults.max_new_tokens <= config.limits.max_new_tokens


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("model: {device: gpu}", "model.device"),
        ("model: {dtype: int8}", "model.dtype"),
        ("limits: {max_new_tokens: 0}", "limits.max_new_tokens"),
        ("service: {queue_size: 2.5}", "service.queue_size"),
        ("service: {request_timeout_s: .nan}", "service.request_timeout_s"),
        ("service: {batch_window_ms: -1}", "service.batch_window_ms"),
        ("discord: {guild_ids: [abc]}", "discord.guild_ids"),
        ("discord: {api_base: ftp://x}", "discord.api_base"),
        ("defaults: {temperature: 9}", "defaults.temperature"),
        ("defaults: {max_new_tokens: 1000}", "defaults.max_new_tokens"),
        ("log_level: LOUD", "log_level"),
        ("model: {compile: yes please}", "model.compile"),
        ("modle: {}", "modle"),
        ("model: {token: abc}", "model.token"),
        ("limits: 5", "limits"),
    ],
)
def test_wrong_key_or_value_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"`{named}"):
        load_config(path, env={})


def test_token_is_not_a_config_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("discord: {token: secret}")
    with pytest.raises(ConfigError, match="discord.token"):
        load_config(path, env={})


def test_api_base_can_come_from_the_environment() -> None:
    config = load_config(ROOT / "config.yaml", env={"TALEWEAVER_DISCORD_API_BASE": "http://127.0.0.1:9"})
    assert config.discord.api_base == "http://127.0.0.1:9"


def test_model_source_is_local_when_its_folder_exists(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model: {source: tests/no-such-model}")
    assert load_config(path, env={}).model_source == str(ROOT / "tests" / "no-such-model")
    path.write_text("model: {source: gpt2}")
    assert load_config(path, env={}).model_source == "gpt2"
