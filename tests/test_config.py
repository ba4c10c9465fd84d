"""config.yaml: the shipped file is valid, and every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from core.config import ROOT, Config, ConfigError, DiscordConfig, load_config, render_yaml
from core.settings import FIELDS


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


def _keys(mapping: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in mapping.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys |= _fields(field.annotation, f"{prefix}{name}.")
    return keys | ({f"{prefix}defaults.{name}" for name in FIELDS} if model is Config else set())


def test_every_key_of_config_yaml_is_a_field_and_every_field_is_in_config_yaml() -> None:
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert _keys(shipped) == _fields(Config)


def test_config_yaml_comments_are_the_fields_descriptions() -> None:
    """One place per key: the comments are written from the models (`python -m core.config --write`)."""
    shipped = (ROOT / "config.yaml").read_text(encoding="utf-8")
    assert shipped == render_yaml(load_config(ROOT / "config.yaml", env={}))


def test_rendered_yaml_reads_back_as_the_same_config(tmp_path: Path) -> None:
    changed = load_config(None, env={}).model_copy(
        update={"discord": DiscordConfig(guild_ids=(123, 456), api_base="http://127.0.0.1:9")}
    )
    path = tmp_path / "config.yaml"
    path.write_text(render_yaml(changed))
    assert load_config(path, env={}) == changed


def test_model_url_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("service: {url: 'http://10.0.0.5:8000'}")
    assert load_config(path, env={}).service.url == "http://10.0.0.5:8000"
    assert load_config(path, env={"TALEWEAVER_MODEL_URL": "http://serve:9"}).service.url == "http://serve:9"
    assert load_config(ROOT / "config.yaml", env={}).service.url == ""  # in process by default
    path.write_text("service: {url: 'serve:8000'}")
    with pytest.raises(ConfigError, match="`service.url"):
        load_config(path, env={})


def test_shards_are_optional_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("discord: {shard_count: 4, shard_ids: [0, 2]}")
    discord = load_config(path, env={}).discord
    assert (discord.shard_count, discord.shard_ids) == (4, (0, 2))
    for wrong in ("discord: {shard_ids: [0]}", "discord: {shard_count: 2, shard_ids: [2]}"):
        path.write_text(wrong)
        with pytest.raises(ConfigError, match="shard"):
            load_config(path, env={})


def test_database_url_comes_from_the_file_or_the_environment_and_never_holds_a_password(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("database: {url: 'postgresql://taleweaver@db:5432/taleweaver', pool_size: 12}")
    database = load_config(path, env={}).database
    assert (database.url, database.pool_size) == ("postgresql://taleweaver@db:5432/taleweaver", 12)
    env = {"TALEWEAVER_DATABASE_URL": "postgresql://bot@10.0.0.7/tales"}
    assert load_config(path, env=env).database.url == "postgresql://bot@10.0.0.7/tales"
    assert load_config(ROOT / "config.yaml", env={}).database.url == ""  # SQLite by default
    for wrong in ("postgresql://taleweaver:hunter2@db/taleweaver", "mysql://db/taleweaver", "db:5432"):
        path.write_text(f"database: {{url: '{wrong}'}}")
        with pytest.raises(ConfigError, match="`database.url") as info:
            load_config(path, env={})
        assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="TALEWEAVER_DATABASE_PASSWORD"):
        load_config(ROOT / "config.yaml", env={"TALEWEAVER_DATABASE_URL": "postgresql://bot:hunter2@db/tales"})
