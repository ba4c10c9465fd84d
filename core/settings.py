"""The one decoding-settings type: its fields, ranges, defaults and validation.

Everything that reads or writes decoding settings — `/settings`, the preferences store, the model,
the command line — goes through `DecodingSettings` and `FIELDS`, so a range is written once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import SettingsError

Strategy = Literal["greedy", "beam", "sampling"]
STRATEGIES: tuple[str, ...] = ("greedy", "beam", "sampling")
SEED_MAX = 2**31 - 1


@dataclass(frozen=True)
class FieldSpec:
    """Type, range and one-line help of one setting; slash-command options are built from it."""

    name: str
    kind: type
    default: Any
    help: str
    minimum: float | int | None = None
    maximum: float | int | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False

    def describe_range(self) -> str:
        """Human text of what is allowed, used in error messages and `/settings show`."""
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        kind = "a whole number" if self.kind is int else "a number"
        text = f"{kind} from {self.minimum} to {self.maximum}"
        return text + (" (or empty for a random one)" if self.optional else "")


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(
            "strategy",
            str,
            "sampling",
            "How the next word is chosen: greedy (always the likeliest), beam (search several "
            "continuations, keep the best), sampling (draw at random, shaped by temperature, "
            "top-k and top-p).",
            choices=STRATEGIES,
        ),
        FieldSpec("max_new_tokens", int, 120, "How many tokens to write.", 1, 1024),
        FieldSpec(
            "temperature",
            float,
            0.8,
            "Sampling only: below 1 sharpens the distribution (safer), above 1 flattens it (wilder).",
            0.05,
            2.0,
        ),
        FieldSpec(
            "top_k",
            int,
            40,
            "Sampling only: draw only among the k likeliest tokens; 0 turns the filter off.",
            0,
            500,
        ),
        FieldSpec(
            "top_p",
            float,
            1.0,
            "Sampling only (nucleus): draw only among the likeliest tokens whose probabilities "
            "add up to p; 1 turns the filter off.",
            0.05,
            1.0,
        ),
        FieldSpec("num_beams", int, 4, "Beam only: how many continuations to keep.", 2, 8),
        FieldSpec(
            "repetition_penalty",
            float,
            1.1,
            "Divides the score of tokens already written; 1 turns it off.",
            1.0,
            2.0,
        ),
        FieldSpec(
            "no_repeat_ngram_size",
            int,
            0,
            "Never repeat a run of this many tokens; 0 turns it off.",
            0,
            10,
        ),
        FieldSpec(
            "seed",
            int,
            None,
            "Fixes the random draws so a story can be reproduced; empty picks a new one each time.",
            0,
            SEED_MAX,
            optional=True,
        ),
    )
}


def coerce_field(name: str, value: Any) -> Any:
    """Check one raw value (from Discord, SQLite, YAML or a hostile client) and return it typed.

    Strings are accepted only for `strategy`; a number never arrives as text from a
    well-behaved client, so text in a number field is refused rather than guessed at.
    """
    spec = FIELDS.get(name)
    if spec is None:
        raise SettingsError(name, f"there is no such setting; known settings: {', '.join(FIELDS)}.")
    if value is None:
        if spec.optional:
            return None
        raise SettingsError(name, f"a value is required: {spec.describe_range()}.")
    if spec.choices is not None:
        if not isinstance(value, str) or value not in spec.choices:
            raise SettingsError(name, f"must be {spec.describe_range()}, not {_show(value)}.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(name, f"must be {spec.describe_range()}, not {_show(value)}.")
    if spec.kind is int:
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise SettingsError(name, f"must be {spec.describe_range()}, not {_show(value)}.")
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise SettingsError(name, f"must be {spec.describe_range()}, not {_show(value)}.")
    if not spec.minimum <= value <= spec.maximum:
        raise SettingsError(name, f"must be {spec.describe_range()}, not {_show(value)}.")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class DecodingSettings:
    """How one story is decoded. Every instance is valid: construction checks every field."""

    strategy: Strategy = FIELDS["strategy"].default
    """greedy, beam or sampling (see `FIELDS` for the meaning of each)."""
    max_new_tokens: int = FIELDS["max_new_tokens"].default
    """Tokens to generate, 1–1024 (the bot's config may cap it lower)."""
    temperature: float = FIELDS["temperature"].default
    """Sampling temperature, 0.05–2.0."""
    top_k: int = FIELDS["top_k"].default
    """Top-k filter for sampling, 0–500; 0 is off."""
    top_p: float = FIELDS["top_p"].default
    """Nucleus filter for sampling, 0.05–1.0; 1.0 is off."""
    num_beams: int = FIELDS["num_beams"].default
    """Beams for beam search, 2–8."""
    repetition_penalty: float = FIELDS["repetition_penalty"].default
    """CTRL-style repetition penalty, 1.0–2.0; 1.0 is off."""
    no_repeat_ngram_size: int = FIELDS["no_repeat_ngram_size"].default
    """Forbid repeating any n-gram of this size, 0–10; 0 is off."""
    seed: int | None = FIELDS["seed"].default
    """Random seed, 0–2^31−1; None draws a fresh one per request."""

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, coerce_field(name, getattr(self, name)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: DecodingSettings | None = None) -> DecodingSettings:
        """Build from a partial mapping over `base` (defaults when None); unknown keys are errors."""
        return (base or cls()).replace(**dict(values))

    def replace(self, **changes: Any) -> DecodingSettings:
        """A copy with some fields changed, validated like a new instance."""
        for name in changes:
            if name not in FIELDS:
                coerce_field(name, None)
        return dataclasses.replace(self, **changes)

    def relevant_fields(self) -> tuple[str, ...]:
        """The fields that change this strategy's output, for display."""
        common = ("max_new_tokens", "repetition_penalty", "no_repeat_ngram_size")
        if self.strategy == "sampling":
            return ("strategy", "temperature", "top_k", "top_p", *common, "seed")
        if self.strategy == "beam":
            return ("strategy", "num_beams", *common)
        return ("strategy", *common)

    def summary(self) -> str:
        """One line naming the strategy and its parameters, enough to reproduce a story (a seed not
        chosen yet is left out rather than shown as None)."""
        parts = [
            f"{name}={getattr(self, name)}"
            for name in self.relevant_fields()
            if name != "strategy" and getattr(self, name) is not None
        ]
        return f"{self.strategy} · " + " · ".join(parts)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    values: Mapping[str, Any]


LOOP_GUARD: tuple[str, ...] = ("repetition_penalty", "no_repeat_ngram_size")
"""The repetition controls: what keeps greedy and beam search from writing one sentence over and over."""


def loop_guard(strategy: str) -> dict[str, Any]:
    """The repetition controls of the first preset of `strategy` (beam: `precise`), none without one."""
    preset = next((p for p in PRESETS.values() if p.values.get("strategy") == strategy), None)
    return {name: preset.values[name] for name in LOOP_GUARD if name in preset.values} if preset else {}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "precise",
            "Beam search with 4 beams: careful, coherent, a little dull.",
            {"strategy": "beam", "num_beams": 4, "no_repeat_ngram_size": 3, "repetition_penalty": 1.0},
        ),
        Preset(
            "balanced",
            "Top-k 40 at temperature 0.8: varied but on topic (the default).",
            {
                "strategy": "sampling",
                "temperature": 0.8,
                "top_k": 40,
                "top_p": 1.0,
                "repetition_penalty": 1.1,
                "no_repeat_ngram_size": 0,
            },
        ),
        Preset(
            "creative",
            "Nucleus sampling, top-p 0.95 at temperature 1.0: surprising, sometimes odd.",
            {
                "strategy": "sampling",
                "temperature": 1.0,
                "top_k": 0,
                "top_p": 0.95,
                "repetition_penalty": 1.0,
                "no_repeat_ngram_size": 0,
            },
        ),
        Preset(
            "greedy",
            "Always the likeliest next word, never the same three words twice: deterministic.",
            {"strategy": "greedy", "repetition_penalty": 1.0, "no_repeat_ngram_size": 3},
        ),
    )
}
