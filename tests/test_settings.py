"""The decoding-settings type: ranges, types and messages."""

from __future__ import annotations

import math

import pytest

from core.errors import SettingsError
from core.settings import FIELDS, PRESETS, DecodingSettings, coerce_field

OUT_OF_RANGE = [
    ("max_new_tokens", 0),
    ("max_new_tokens", 1025),
    ("temperature", 0.0),
    ("temperature", 2.5),
    ("top_k", -1),
    ("top_k", 501),
    ("top_p", 0.0),
    ("top_p", 1.01),
    ("num_beams", 1),
    ("num_beams", 9),
    ("repetition_penalty", 0.9),
    ("repetition_penalty", 2.1),
    ("no_repeat_ngram_size", -1),
    ("no_repeat_ngram_size", 11),
    ("seed", -1),
    ("seed", 2**31),
    ("strategy", "nucleus"),
]
WRONG_TYPE = [
    ("max_new_tokens", "100"),
    ("max_new_tokens", 10.5),
    ("max_new_tokens", True),
    ("temperature", "hot"),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("top_p", -math.inf),
    ("top_k", None),
    ("strategy", 3),
    ("seed", 1.5),
    ("num_beams", [4]),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE + WRONG_TYPE)
def test_bad_value_is_rejected_with_a_message_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(SettingsError) as info:
        DecodingSettings().replace(**{field: value})
    assert info.value.field == field
    assert f"`{field}`" in info.value.message
    assert FIELDS[field].describe_range().split(" (")[0] in info.value.message


@pytest.mark.parametrize("field", list(FIELDS))
def test_range_ends_are_accepted(field: str) -> None:
    spec = FIELDS[field]
    for value in spec.choices or (spec.minimum, spec.maximum):
        assert getattr(DecodingSettings().replace(**{field: value}), field) == value


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(SettingsError, match="no such setting"):
        DecodingSettings.from_mapping({"top_z": 3})


def test_whole_float_becomes_int_for_integer_fields() -> None:
    assert DecodingSettings(max_new_tokens=50.0).max_new_tokens == 50
    assert isinstance(coerce_field("top_k", 7.0), int)


def test_seed_may_be_empty() -> None:
    assert DecodingSettings(seed=None).seed is None


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_described(name: str) -> None:
    preset = PRESETS[name]
    settings = DecodingSettings.from_mapping(preset.values)
    assert preset.description and "\n" not in preset.description
    assert settings.strategy in ("greedy", "beam", "sampling")


def test_summary_shows_only_fields_that_matter_to_the_strategy() -> None:
    assert "temperature" not in DecodingSettings(strategy="greedy").summary()
    assert "num_beams=4" in DecodingSettings(strategy="beam").summary()
    assert "top_k=40" in DecodingSettings(strategy="sampling", top_k=40).summary()
