"""The one place where the decoding settings of a request are worked out.

Layers, lowest first: the built-in defaults, `config.yaml`, the server's defaults, the user's own
settings, the options of the single command. Each layer holds only the fields somebody chose.
Then the limits clamp the result: the bot's `limits.max_new_tokens` and the server's limits,
whichever is lower. Every value passes `coerce_field` on the way, so the ranges of
`core.settings` decide here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from core.settings import FIELDS, DecodingSettings, coerce_field, loop_guard

Source = Literal["default", "config", "server", "you", "this command", "strategy"]
LimitedBy = Literal["server", "bot"]

LIMIT_FIELDS: tuple[str, ...] = ("max_new_tokens", "num_beams", "temperature")
"""Settings a server may cap: the two that cost GPU time, and how wild the sampling may get."""

_CHOSEN_BY_USER: frozenset[str] = frozenset({"you", "this command"})
_LAYER_RANK: dict[str, int] = {"default": 0, "config": 1, "server": 2, "you": 3, "this command": 4}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Limit:
    """The highest value a setting may take here, and who set it."""

    value: int | float
    by: LimitedBy

    @property
    def owner(self) -> str:
        return "this server's limit" if self.by == "server" else "the bot's limit"


@dataclass(frozen=True)
class Clamp:
    """A value that was above its limit and was lowered to it."""

    field: str
    requested: int | float
    limit: Limit

    def note(self) -> str:
        return f"`{self.field}` {self.requested} was capped to {self.limit.value} by {self.limit.owner}."


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings one request uses, where each value came from, and what the limits changed."""

    settings: DecodingSettings
    sources: Mapping[str, Source]
    """Field → the layer its value came from (before any clamping)."""
    notes: tuple[str, ...] = ()
    """Lines to show the user: values they chose that a limit lowered (where the strategy uses them),
    and values they chose that the strategy does not use."""
    clamps: Mapping[str, Clamp] = field(default_factory=lambda: _EMPTY)
    """Every value a limit lowered, including defaults the user never chose (not in `notes`)."""
    limits: Mapping[str, Limit] = field(default_factory=lambda: _EMPTY)
    """The limits in force for this request."""


def effective_limits(server_limits: Mapping[str, Any], max_new_tokens_cap: int) -> dict[str, Limit]:
    """The bot's cap and the server's limits combined; the lower one wins (the bot's on a tie)."""
    limits = {"max_new_tokens": Limit(max_new_tokens_cap, "bot")}
    for name, value in server_limits.items():
        if name in limits and limits[name].value <= value:
            continue
        limits[name] = Limit(value, "server")
    return limits


def resolve_settings(
    *,
    config_defaults: DecodingSettings,
    max_new_tokens_cap: int,
    server: Mapping[str, Any] = _EMPTY,
    user: Mapping[str, Any] = _EMPTY,
    command: Mapping[str, Any] = _EMPTY,
    server_limits: Mapping[str, Any] = _EMPTY,
) -> ResolvedSettings:
    """Merge the layers and apply the limits; a bad value in any layer raises `SettingsError`.

    The user is told (in `notes`) only about values they chose themselves: a default lowered by
    a server's limit is the server's business and would otherwise be repeated on every story.
    """
    builtin = DecodingSettings()
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name in FIELDS:
        configured = getattr(config_defaults, name)
        values[name] = configured
        sources[name] = "default" if configured == getattr(builtin, name) else "config"
    layers: tuple[tuple[Source, Mapping[str, Any]], ...] = (
        ("server", server),
        ("you", user),
        ("this command", command),
    )
    for source, layer in layers:
        for name, raw in layer.items():
            values[name] = coerce_field(name, raw)
            sources[name] = source
    _guard_loops(values, sources)
    limits = effective_limits(server_limits, max_new_tokens_cap)
    clamps: dict[str, Clamp] = {}
    for name, limit in limits.items():
        if values[name] > limit.value:
            clamps[name] = Clamp(name, values[name], limit)
            values[name] = limit.value
    settings = DecodingSettings(**values)
    used = set(settings.relevant_fields())
    notes = tuple(
        clamp.note() for name, clamp in clamps.items() if sources[name] in _CHOSEN_BY_USER and name in used
    ) + _unused_choices(settings, sources)
    return ResolvedSettings(
        settings=settings,
        sources=MappingProxyType(sources),
        notes=notes,
        clamps=MappingProxyType(clamps),
        limits=MappingProxyType(limits),
    )


def _guard_loops(values: dict[str, Any], sources: dict[str, Source]) -> None:
    """A strategy someone chose (a server, the user, the command) brings its preset's repetition
    controls, unless that layer or a later one set them: `/story strategy:beam` gets the `precise`
    preset's no-repeat rule, not the sampling defaults under which beam search writes one sentence
    over and over. The bot's own defaults (config.yaml) are left as the operator wrote them."""
    chosen_at = sources["strategy"]
    if chosen_at in ("default", "config"):
        return
    for name, value in loop_guard(values["strategy"]).items():
        if _LAYER_RANK[sources[name]] < _LAYER_RANK[chosen_at]:
            values[name], sources[name] = value, "strategy"


_USED_BY = {
    "temperature": "sampling",
    "top_k": "sampling",
    "top_p": "sampling",
    "seed": "sampling",
    "num_beams": "beam",
}
_STRATEGY_OWNER = {"default": "the built-in default", "config": "the bot's default", "server": "this server's default"}


def _unused_choices(settings: DecodingSettings, sources: Mapping[str, Source]) -> tuple[str, ...]:
    """Say when a value the user chose does nothing: the strategy in force does not use it.

    Values given with this command are always reported. Saved ones only when the strategy is not
    the user's own choice (a server default overrode it): someone who saved a temperature and then
    chose beam search knows, and should not read it under every story.
    """
    strategy_chosen = sources["strategy"] in _CHOSEN_BY_USER
    used = set(settings.relevant_fields())
    notes = []
    for name, needs in _USED_BY.items():
        if name in used or not (sources[name] == "this command" or sources[name] == "you" and not strategy_chosen):
            continue
        whose = "" if strategy_chosen else f" ({_STRATEGY_OWNER[sources['strategy']]})"
        notes.append(
            f"`{name}` {getattr(settings, name)} is not used: this story is {settings.strategy}{whose}, "
            f"and `{name}` applies to {needs} only."
        )
    return tuple(notes)
