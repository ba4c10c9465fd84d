"""Reading and validating `config.yaml`.

A wrong key or value stops the bot at start-up with a message that names the key and what is
allowed, rather than failing later in the middle of someone's story. Secrets never live here:
the Discord token comes from the `DISCORD_TOKEN` environment variable only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.errors import SettingsError
from model.settings import DecodingSettings

ROOT = Path(__file__).resolve().parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
API_BASE_ENV = "TALEWEAVER_DISCORD_API_BASE"


class ConfigError(Exception):
    """config.yaml is wrong; the message names the key and what is allowed."""


@dataclass(frozen=True)
class ModelConfig:
    source: str = "models/tales"
    """A local directory (relative to the project) or a Hugging Face hub id such as `gpt2`."""
    device: str = "auto"
    """auto (GPU when CUDA is there), cpu or cuda."""
    dtype: str = "auto"
    """auto (half precision on GPU, float32 on CPU), float32, bfloat16 or float16."""
    cpu_threads: int = 1
    """Torch threads for CPU inference; 1 is as fast as 2 at batch 1 and immune to contention."""
    compile: bool = False
    """Wrap the model in `torch.compile` (5–11 % faster on CPU for 20–40 s of start-up; unproven on GPU)."""


@dataclass(frozen=True)
class LimitsConfig:
    max_prompt_tokens: int = 200
    """Longest prompt, in tokens."""
    max_new_tokens: int = 300
    """Most tokens one request may generate (caps the user's setting)."""


@dataclass(frozen=True)
class ServiceConfig:
    queue_size: int = 32
    """Requests waiting for the model at most; more are refused with a busy message."""
    per_user_in_flight: int = 1
    """Requests one user may have queued or running at once."""
    per_user_per_minute: int = 10
    """Model requests (stories, continuations, explanations) one user may start per minute."""
    request_timeout_s: float = 120.0
    """A story or explanation running longer than this is cut off."""
    batch_window_ms: float = 5.0
    """How long the worker waits for more requests to batch with the first one."""
    max_batch_size: int = 8
    """Most requests generated together in one batch."""


@dataclass(frozen=True)
class WhyConfig:
    time_budget_s: float = 20.0
    """Wall-clock budget of one /why explanation."""
    max_steps: int = 20
    """Most optimisation steps of the fast method (its learning rate decays over them)."""
    starts: int = 8
    """Independent random starts optimised side by side and averaged."""
    samples_per_step: int = 1
    """Noise samples per start and step; starts × samples run as one batch."""
    patience: int = 10
    """Stop after this many steps without a better loss."""


@dataclass(frozen=True)
class DiscordConfig:
    guild_ids: tuple[int, ...] = ()
    """Servers to sync slash commands to instantly; empty syncs globally (can take an hour)."""
    api_base: str | None = None
    """Base URL of a Discord API stand-in (the local playground); None is the real Discord."""
    edit_interval_s: float = 1.0
    """Least time between two edits of a streaming reply."""


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "data/taleweaver.db"
    """SQLite file of the preferences (relative to the project)."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    why: WhyConfig = field(default_factory=WhyConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    defaults: DecodingSettings = field(default_factory=DecodingSettings)
    """Decoding defaults for everyone, below server and user preferences."""
    log_level: str = "INFO"

    def resolve_path(self, path: str) -> Path:
        """Relative paths in the config are relative to the project, not the working directory."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else ROOT / candidate

    @property
    def model_source(self) -> str:
        """A local path when one exists there (or its folder does: then it is a missing local
        model, not a hub id, and loading should fail at once instead of asking the hub)."""
        local = self.resolve_path(self.model.source)
        is_local = local.exists() or (local.parent != ROOT and local.parent.exists())
        return str(local) if is_local else self.model.source


_CHOICES: dict[str, tuple[str, ...]] = {
    "model.device": ("auto", "cpu", "cuda"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "log_level": LOG_LEVELS,
}
_POSITIVE = {
    "model.cpu_threads",
    "limits.max_prompt_tokens",
    "limits.max_new_tokens",
    "service.queue_size",
    "service.per_user_in_flight",
    "service.per_user_per_minute",
    "service.request_timeout_s",
    "service.max_batch_size",
    "why.time_budget_s",
    "why.max_steps",
    "why.starts",
    "why.samples_per_step",
    "why.patience",
}
_NON_NEGATIVE = {"service.batch_window_ms", "discord.edit_interval_s"}


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; `None` gives the built-in defaults."""
    env = os.environ if env is None else env
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("config.yaml must be a mapping of sections (model, limits, service, ...)")
    config = _build(Config, raw, "")
    if env.get(API_BASE_ENV):
        config = dataclasses.replace(config, discord=dataclasses.replace(config.discord, api_base=env[API_BASE_ENV]))
    if config.defaults.max_new_tokens > config.limits.max_new_tokens:
        raise ConfigError(
            f"`defaults.max_new_tokens` ({config.defaults.max_new_tokens}) must be at most "
            f"`limits.max_new_tokens` ({config.limits.max_new_tokens})"
        )
    return config


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            where = f"section `{prefix[:-1]}`" if prefix else "config.yaml"
            raise ConfigError(f"unknown key `{prefix}{key}` in {where}; allowed: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = prefix + name
        default = (
            fields[name].default_factory()
            if fields[name].default_factory is not dataclasses.MISSING
            else fields[name].default
        )
        if isinstance(default, DecodingSettings):
            values[name] = _build_settings(value, key)
        elif dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"`{key}` must be a section (a mapping), not {value!r}")
            values[name] = _build(type(default), value, key + ".")
        else:
            values[name] = _check_value(key, value, default)
    return cls(**values)


def _build_settings(value: Any, key: str) -> DecodingSettings:
    if not isinstance(value, dict):
        raise ConfigError(f"`{key}` must be a mapping of decoding settings")
    try:
        return DecodingSettings.from_mapping(value)
    except SettingsError as exc:
        raise ConfigError(f"`{key}.{exc.field}`: {exc.message.split(': ', 1)[-1]}") from exc


def _check_value(key: str, value: Any, default: Any) -> Any:
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise ConfigError(f"`{key}` must be one of {', '.join(_CHOICES[key])}, not {value!r}")
        return value
    if key == "discord.guild_ids":
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        ):
            raise ConfigError(f"`{key}` must be a list of server ids (whole numbers), not {value!r}")
        return tuple(value)
    if key in ("discord.api_base",):
        if value is not None and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
            raise ConfigError(f"`{key}` must be an http(s) URL or empty, not {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"`{key}` must be true or false, not {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"`{key}` must be a non-empty string, not {value!r}")
        return value
    expected = int if isinstance(default, int) else float
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and (expected is int and isinstance(value, float) or not math.isfinite(value)):
        ok = False
    if not ok:
        kind = "a whole number" if expected is int else "a number"
        raise ConfigError(f"`{key}` must be {kind}, not {value!r}")
    if key in _POSITIVE and not value > 0:
        raise ConfigError(f"`{key}` must be greater than 0, not {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"`{key}` must be 0 or more, not {value!r}")
    return expected(value)
