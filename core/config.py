"""`config.yaml`, read and validated by pydantic models: each key is declared once, here.

A key's type, constraint, default and description live on its field; `config.yaml` carries the
same descriptions as comments, written from these models (`python -m core.config --write`), and a
test keeps the two equal. A wrong key or value stops the bot at start-up with a message that
names the key and what is allowed, rather than failing later in the middle of someone's story.
Secrets never live here: the Discord token comes from the `DISCORD_TOKEN` environment variable only,
the PostgreSQL password from `TALEWEAVER_DATABASE_PASSWORD`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import SettingsError
from core.settings import DecodingSettings

ROOT = Path(__file__).resolve().parent.parent
"""The project folder: relative paths in the config are relative to it."""
API_BASE_ENV = "TALEWEAVER_DISCORD_API_BASE"
MODEL_URL_ENV = "TALEWEAVER_MODEL_URL"
DATABASE_URL_ENV = "TALEWEAVER_DATABASE_URL"
DATABASE_PASSWORD_ENV = "TALEWEAVER_DATABASE_PASSWORD"
"""The PostgreSQL password: from the environment only, like the Discord token."""


class ConfigError(Exception):
    """config.yaml is wrong; the message names the key and what is allowed."""


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Section(BaseModel):
    """A config section: unknown keys are mistakes, values keep their YAML type (no "3" for 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelConfig(Section):
    source: str = Field(
        "models/tales",
        min_length=1,
        description="A local model directory (relative to this file) or a Hugging Face hub id such as gpt2.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (GPU when CUDA is available), cpu, cuda.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto (bf16/fp16 on GPU, float32 on CPU), float32, bfloat16, float16."
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="The weights' precision for writing stories. auto: the fastest mode that passed this model's "
        "precision gate on this CPU (python -m model.precision_gate MODEL_DIR; held-out bits per byte within 1% of "
        "fp32, same stories alone and batched), else fp32. int8: int8 weights, CPU only (Taleweaver's own kernel "
        "where the CPU has AVX-512 VNNI and a C compiler is there, one thread whatever cpu_threads says; else FBGEMM "
        "for big matrices, bf16 rows for small ones where bf16 is native). /why keeps fp32/bf16.",
    )
    cpu_threads: PositiveInt = Field(
        1,
        description="Torch threads on CPU. 1 is robust when other work shares the cores; 2 on a quiet two-core "
        "host made GPT-2-small steps 1.7x faster but ran 6-15x slower with another process on the second core.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model: off, since on CPU a compiled step measured 2.4-3x slower than the "
        "eager lean step (docs/performance.md).",
    )
    onednn_linears: bool = Field(
        True,
        description="On CPU, batches of 3+ rows go through oneDNN with prepacked weights (8 rows of GPT-2 small: "
        "99 -> 70 ms a step); costs a second copy of the big weight matrices in memory.",
    )


class LimitsConfig(Section):
    max_prompt_tokens: PositiveInt = Field(200, description="Longest prompt accepted, in tokens.")
    max_new_tokens: PositiveInt = Field(
        300, description="Most tokens one request may generate (caps everyone's setting)."
    )


class ServiceConfig(Section):
    queue_size: PositiveInt = Field(32, description='Requests waiting for the model at most; more get a polite "busy".')
    per_user_in_flight: PositiveInt = Field(1, description="Requests one user may have queued or running at once.")
    per_user_per_minute: PositiveInt = Field(
        10, description="Model requests (story, continue, regenerate, why) one user may start per minute."
    )
    request_timeout_s: PositiveFloat = Field(
        120.0, description="A request running longer is cut off, and its user told."
    )
    batch_window_ms: NonNegativeFloat = Field(
        5.0, description="Beam search: how long the worker waits to batch more beam searches with the first."
    )
    max_batch_size: PositiveInt = Field(
        8, description="Most stories written together (they join and leave step by step)."
    )
    stream_interval_s: NonNegativeFloat = Field(
        0.25,
        description="Least time between two hand-overs of streamed text from the model's worker to the event loop "
        "(the first piece goes at once). Each wakes the loop and slowed the worker's steps (docs/performance.md); "
        "replies are edited at most every discord.edit_interval_s anyway.",
    )
    continuous_batching: bool = Field(
        True, description="Stories join and leave the running batch at every step; false: whole batches in turn."
    )
    max_tokens_in_flight: PositiveInt = Field(
        8192,
        description='Most tokens (prompt + new) of stories being written or waiting, per replica; more get "busy".',
    )
    whole_words: bool = Field(
        True, description="A prompt is whole words: the story's first token never glues onto its last word."
    )
    finish_sentences: bool = Field(
        True,
        description=(
            "A story at its length runs on (a quarter more, 8-40 tokens) to end its sentence, never mid-word; "
            "if none has ended by then, its next token is one that ends it."
        ),
    )
    url: str = Field(
        "",
        pattern=r"^(https?://.+)?$",
        description="URL of the model service on Ray Serve (python -m model.serve); empty = in the bot's "
        "process. TALEWEAVER_MODEL_URL overrides it.",
    )


class WhyConfig(Section):
    time_budget_s: PositiveFloat = Field(20.0, description="Wall-clock budget of one /why explanation, in seconds.")
    max_steps: PositiveInt = Field(10, description="Most optimisation steps of the fast perturbation method.")
    starts: PositiveInt = Field(8, description="Random starts, optimised as one batch and averaged.")
    samples_per_step: PositiveInt = Field(1, description="Noise samples per start and step.")
    patience: PositiveInt = Field(10, description="Stop after this many steps without a lower loss.")
    antithetic: bool = Field(
        False, description="Draw each start's noise in pairs e, -e (samples_per_step made even); off: it lost fidelity."
    )
    antithetic_starts: bool = Field(
        True, description="Start half the runs at the other half's ratios negated (mirrored starts: fewer needed)."
    )
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Dtype of the model's passes, on a copy of the weights (sigma, loss, optimiser stay "
        "float32); auto = bf16 on a GPU, or on a CPU with AVX-512-BF16/AMX for models of 50M parameters or "
        "more, else the model's own.",
    )
    prepare_at_start: bool = Field(
        True,
        description="Make /why's copy of the weights and its noise scale r when the service starts, so the "
        "first /why is as quick as the rest (costs start-up time; a bf16 copy is half the fp32 weights again).",
    )


GuildIds = Annotated[tuple[Annotated[PositiveInt, Strict()], ...], Strict(False)]
"""A YAML list of server ids; strict on each id (no "123", no true), lax on list-to-tuple."""


ShardIds = Annotated[tuple[Annotated[int, Strict(), Field(ge=0)], ...], Strict(False)]


class DiscordConfig(Section):
    guild_ids: GuildIds = Field(
        (), description="Servers (ids) to sync commands to at once; empty = global sync, slow to appear."
    )
    api_base: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Base URL of a Discord API stand-in; null = real Discord (the playground sets it).",
    )
    edit_interval_s: NonNegativeFloat = Field(1.0, description="Least time between two edits of a streaming reply.")
    shard_count: PositiveInt | None = Field(
        None, description="Shards in all (split across bot processes); null = as many as Discord recommends."
    )
    shard_ids: ShardIds | None = Field(
        None, description="The shards this process runs (needs shard_count); null = all of them."
    )

    @model_validator(mode="after")
    def _shard_ids_within_count(self) -> DiscordConfig:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("`discord.shard_ids` needs `discord.shard_count`")
            if any(shard >= self.shard_count for shard in self.shard_ids):
                raise ValueError(f"`discord.shard_ids` must each be below `discord.shard_count` ({self.shard_count})")
        return self


class DatabaseConfig(Section):
    url: str = Field(
        "",
        pattern=r"^(postgres(ql)?://\S+)?$",
        description="PostgreSQL that every bot process shares, e.g. postgresql://taleweaver@db:5432/taleweaver; "
        "empty = the SQLite file at `path`. No password here: it comes from TALEWEAVER_DATABASE_PASSWORD. "
        "TALEWEAVER_DATABASE_URL overrides it.",
    )
    path: str = Field(
        "data/taleweaver.db",
        min_length=1,
        description="SQLite file of user and server preferences (relative to this file), when `url` is empty.",
    )
    pool_size: int = Field(
        5,
        ge=1,
        le=100,
        description="PostgreSQL: connections each bot process keeps for writes, and as many for reads; a command "
        'that finds none free within a second is told "busy".',
    )
    story_retention_days: int = Field(
        90,
        ge=0,
        le=36500,
        description="Days a story's record (opening, parts, seeds) is kept after its last change; 0 = forever.",
    )

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        if url and urlsplit(url).password is not None:
            raise ValueError(f"must not hold a password: put it in {DATABASE_PASSWORD_ENV} instead")
        return url


class OpsConfig(Section):
    enabled: bool = Field(True, description="Serve /healthz, /readyz and /metrics (Prometheus) over HTTP.")
    host: str = Field(
        "127.0.0.1", min_length=1, description="Address to listen on; 0.0.0.0 exposes it beyond this machine."
    )
    port: int = Field(9108, ge=0, le=65535, description="Port to listen on; 0 picks a free one (logged).")


def _decoding_settings(value: Any) -> DecodingSettings:
    """The `defaults` section goes through `DecodingSettings`, whose ranges are written in `core.settings`."""
    if isinstance(value, DecodingSettings):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of decoding settings")
    return DecodingSettings.from_mapping(value)  # SettingsError is a ValueError naming its field


Defaults = Annotated[DecodingSettings, BeforeValidator(_decoding_settings)]


class Config(Section):
    """The whole file. Sections are optional; a missing key takes its default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)

    model: ModelConfig = Field(default_factory=ModelConfig, description="The language model.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Limits on every request.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="The model service's queue and batches.")
    why: WhyConfig = Field(default_factory=WhyConfig, description="The /why optimisation.")
    discord: DiscordConfig = Field(default_factory=DiscordConfig, description="The Discord connection.")
    database: DatabaseConfig = Field(
        default_factory=DatabaseConfig,
        description="The database of preferences and stories: SQLite, or PostgreSQL at scale.",
    )
    ops: OpsConfig = Field(default_factory=OpsConfig, description="The operations endpoint: health and metrics.")
    defaults: Defaults = Field(
        default_factory=DecodingSettings,
        description="Decoding defaults for everyone, below server and user preferences (see /settings).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text (coloured only on a terminal) or json (one object a line, for log collectors)."
    )

    @model_validator(mode="after")
    def _one_story_fits_the_token_budget(self) -> Config:
        needed = self.limits.max_prompt_tokens + self.limits.max_new_tokens
        if self.service.max_tokens_in_flight < needed:
            raise ValueError(
                f"`service.max_tokens_in_flight` ({self.service.max_tokens_in_flight}) must hold at least one "
                f"story: `limits.max_prompt_tokens` + `limits.max_new_tokens` = {needed}"
            )
        return self

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Config:
        if self.defaults.max_new_tokens > self.limits.max_new_tokens:
            raise ValueError(
                f"`defaults.max_new_tokens` ({self.defaults.max_new_tokens}) must be at most "
                f"`limits.max_new_tokens` ({self.limits.max_new_tokens})"
            )
        return self

    @property
    def cache_dir(self) -> Path:
        """Where caches go (r of /why): beside the preferences database, under the data folder."""
        return self.resolve_path(self.database.path).parent / "cache"

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


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; `None` gives the built-in defaults."""
    env = os.environ if env is None else env
    raw = _read_yaml(path) if path is not None else {}
    if env.get(API_BASE_ENV):
        discord = raw.get("discord")
        raw = {**raw, "discord": {**(discord if isinstance(discord, dict) else {}), "api_base": env[API_BASE_ENV]}}
    if env.get(MODEL_URL_ENV):
        service = raw.get("service")
        raw = {**raw, "service": {**(service if isinstance(service, dict) else {}), "url": env[MODEL_URL_ENV]}}
    if env.get(DATABASE_URL_ENV):
        database = raw.get("database")
        raw = {**raw, "database": {**(database if isinstance(database, dict) else {}), "url": env[DATABASE_URL_ENV]}}
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc)) from None


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("config.yaml must be a mapping of sections (model, limits, service, ...)")
    return raw


def _first_problem(exc: ValidationError) -> str:
    """One line naming the key (`section.key`) and what is wrong with it, from pydantic's report."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SettingsError):
        loc.append(cause.field)
        message = cause.message.split(": ", 1)[-1]
    elif error["type"] == "extra_forbidden":
        section = _section_of(loc[:-1])
        message = f"unknown key; allowed: {', '.join(section.model_fields)}"
    elif error["type"] == "model_type":
        message = "must be a section (a mapping of keys)"
    else:
        message = error["msg"].removeprefix("Value error, ").replace("Input should be", "should be")
    if not loc:
        return message
    shown = repr(error["input"])
    suffix = "" if error["type"] in ("extra_forbidden", "value_error") else f", not {shown[:60]}"
    return f"`{'.'.join(loc)}`: {message}{suffix}"


def _section_of(loc: list[str]) -> type[BaseModel]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


HEADER = """\
# Taleweaver configuration. Every key is optional; a missing key takes its default.
# A wrong key or value stops the bot at start-up with a message naming it.
# Secrets never go here: the bot reads its token from the DISCORD_TOKEN environment variable.
# The comments come from core/config.py: after changing a key there, run
#   python -m core.config --write config.yaml   (keeps the values set here)
"""


def render_yaml(config: Config) -> str:
    """`config` as commented YAML: every section and key, each with its description above it."""
    lines = [HEADER.rstrip("\n")]
    for name, info in Config.model_fields.items():
        value = getattr(config, name)
        lines += ["", f"# {info.description}"]
        if isinstance(value, BaseModel):
            lines.append(f"{name}:")
            for key, field in type(value).model_fields.items():
                lines += [f"  # {field.description}", f"  {key}: {_yaml_scalar(getattr(value, key))}"]
        elif isinstance(value, DecodingSettings):
            from core.settings import FIELDS

            lines.append(f"{name}:")
            for key, spec in FIELDS.items():
                help_line = f"  # {spec.help} Allowed: {spec.describe_range()}.".replace("`", "")
                lines += [help_line, f"  {key}: {_yaml_scalar(getattr(value, key))}"]
        else:
            lines.append(f"{name}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n").removesuffix("\n...")


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m core.config", description="Check or rewrite config.yaml.")
    parser.add_argument("path", nargs="?", default=str(ROOT / "config.yaml"))
    parser.add_argument("--write", action="store_true", help="rewrite the file's comments from core/config.py")
    args = parser.parse_args(argv)
    path = Path(args.path)
    try:
        config = load_config(path if path.exists() or not args.write else None, env={})
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        path.write_text(render_yaml(config), encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"{path} is valid; model: {config.model_source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
