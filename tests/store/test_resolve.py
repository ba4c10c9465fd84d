"""The one resolution function: layer order, sources, limits and what the user is told."""

from __future__ import annotations

import pytest

from core.errors import SettingsError
from core.settings import FIELDS, PRESETS, DecodingSettings
from store.resolve import Limit, effective_limits, resolve_settings

CONFIG = DecodingSettings(temperature=0.9, top_k=40)
"""config.yaml's defaults in these tests: temperature differs from the built-in 0.8, top_k does not."""


def resolve(**layers):
    return resolve_settings(config_defaults=CONFIG, max_new_tokens_cap=300, **layers)


def test_with_nothing_chosen_the_values_are_the_config_and_builtin_defaults() -> None:
    """No layers: config.yaml's values, labelled "config" where they differ from the built-in ones."""
    resolved = resolve()
    assert resolved.settings == CONFIG
    assert resolved.sources["temperature"] == "config"
    assert resolved.sources["top_k"] == "default"
    assert resolved.notes == ()


def test_each_layer_overrides_the_ones_below_it() -> None:
    """default < config < server < you < this command, field by field."""
    resolved = resolve(
        server={"temperature": 1.0, "top_k": 10, "top_p": 0.9, "num_beams": 3},
        user={"top_k": 20, "top_p": 0.8, "num_beams": 5},
        command={"top_p": 0.7},
    )
    settings = resolved.settings
    assert (settings.temperature, settings.top_k, settings.top_p, settings.num_beams) == (1.0, 20, 0.7, 5)
    assert {name: resolved.sources[name] for name in ("repetition_penalty", "temperature", "top_k", "top_p")} == {
        "repetition_penalty": "default",
        "temperature": "server",
        "top_k": "you",
        "top_p": "this command",
    }


def test_every_field_has_a_source() -> None:
    """`/settings show` can label every line."""
    assert set(resolve().sources) == set(FIELDS)


def test_a_server_limit_clamps_the_users_value_and_tells_them() -> None:
    """A user's value above the server's limit is lowered, with a note naming both numbers."""
    resolved = resolve(user={"max_new_tokens": 250}, server_limits={"max_new_tokens": 200})
    assert resolved.settings.max_new_tokens == 200
    assert resolved.sources["max_new_tokens"] == "you"
    assert resolved.notes == ("`max_new_tokens` 250 was capped to 200 by this server's limit.",)
    assert resolved.clamps["max_new_tokens"].requested == 250


def test_the_bots_cap_clamps_a_commands_value() -> None:
    """config.yaml's `limits.max_new_tokens` applies to a command's own option too."""
    resolved = resolve(command={"max_new_tokens": 1000})
    assert resolved.settings.max_new_tokens == 300
    assert resolved.notes == ("`max_new_tokens` 1000 was capped to 300 by the bot's limit.",)


def test_the_lower_of_the_bot_and_server_limits_wins() -> None:
    """A server cannot raise the bot's cap; a lower server limit is the one in force."""
    assert effective_limits({"max_new_tokens": 500}, 300)["max_new_tokens"] == Limit(300, "bot")
    assert effective_limits({"max_new_tokens": 100}, 300)["max_new_tokens"] == Limit(100, "server")
    assert effective_limits({"max_new_tokens": 300}, 300)["max_new_tokens"] == Limit(300, "bot")


def test_limits_on_beams_and_temperature_clamp_too() -> None:
    """Every limitable field is clamped, floats included."""
    resolved = resolve(user={"num_beams": 8, "temperature": 1.8}, server_limits={"num_beams": 2, "temperature": 1.2})
    assert (resolved.settings.num_beams, resolved.settings.temperature) == (2, 1.2)
    assert len(resolved.notes) == 2


def test_a_default_lowered_by_a_limit_is_clamped_without_a_note() -> None:
    """The user did not choose the default, so every story would repeat a note they cannot act on."""
    resolved = resolve(server={"num_beams": 6}, server_limits={"num_beams": 3})
    assert resolved.settings.num_beams == 3
    assert resolved.notes == ()
    assert "num_beams" in resolved.clamps


def test_a_value_at_the_limit_is_not_a_clamp() -> None:
    """Equal to the limit is allowed and reported as nothing."""
    resolved = resolve(user={"max_new_tokens": 200}, server_limits={"max_new_tokens": 200})
    assert resolved.settings.max_new_tokens == 200
    assert not resolved.clamps


@pytest.mark.parametrize(
    ("name", "value"),
    [("temperature", 5.0), ("top_k", "10"), ("strategy", "fast"), ("num_beams", float("nan")), ("colour", 1)],
)
def test_a_bad_override_raises_settings_error_naming_the_field(name: str, value: object) -> None:
    """A command's option is checked like any other value, and the error names it."""
    with pytest.raises(SettingsError) as caught:
        resolve(command={name: value})
    assert caught.value.field == name


def test_a_seed_of_none_in_a_command_means_a_random_seed_for_it() -> None:
    """`seed: None` overrides a saved seed for this one command."""
    resolved = resolve(user={"seed": 7}, command={"seed": None})
    assert resolved.settings.seed is None
    assert resolved.sources["seed"] == "this command"


def test_the_result_cannot_be_changed_by_its_reader() -> None:
    """Sources and limits are read-only views; the settings are frozen."""
    resolved = resolve()
    with pytest.raises(TypeError):
        resolved.sources["top_k"] = "you"  # type: ignore[index]


# Notes name only what applies -------------------------------------------------------------------


def test_a_cap_on_a_setting_the_strategy_ignores_is_not_reported() -> None:
    """A temperature capped by the server says nothing on a greedy story: greedy does not sample."""
    resolved = resolve(command={"strategy": "greedy", "temperature": 1.5}, server_limits={"temperature": 1.0})
    assert resolved.clamps["temperature"].requested == 1.5  # still capped, for /settings show
    assert not any("capped" in note for note in resolved.notes)


def test_a_choice_overridden_by_the_servers_strategy_is_said() -> None:
    """A member asks for a temperature; the server's default strategy is greedy: the story says so."""
    resolved = resolve(server={"strategy": "greedy"}, command={"temperature": 1.2})
    assert resolved.settings.strategy == "greedy"
    assert resolved.notes == (
        "`temperature` 1.2 is not used: this story is greedy (this server's default), "
        "and `temperature` applies to sampling only.",
    )


def test_a_seed_given_with_beam_search_is_said_to_be_unused() -> None:
    resolved = resolve(command={"strategy": "beam", "seed": 5})
    assert resolved.notes == ("`seed` 5 is not used: this story is beam, and `seed` applies to sampling only.",)


def test_saved_values_the_users_own_strategy_ignores_are_not_repeated_on_every_story() -> None:
    """Someone who saved a temperature and then chose beam search knows; nothing to say."""
    assert resolve(user={"temperature": 1.2, "strategy": "beam"}).notes == ()
    assert resolve(user={"temperature": 1.2}, server={"strategy": "beam"}).notes != ()


def test_every_note_names_only_settings_the_strategy_uses_or_says_they_are_unused() -> None:
    for strategy in ("greedy", "beam", "sampling"):
        resolved = resolve(
            command={"strategy": strategy, "temperature": 1.9, "num_beams": 8, "max_new_tokens": 900},
            server_limits={"temperature": 1.0, "num_beams": 3},
        )
        used = set(resolved.settings.relevant_fields())
        for note in resolved.notes:
            field = note.split("`")[1]
            assert field in used or "is not used" in note, note


def test_beam_chosen_on_its_own_gets_its_presets_loop_guard() -> None:
    """`/settings set strategy:beam` or `/story strategy:beam` over sampling defaults: beam search
    gets the `precise` preset's repetition controls, which keep it from looping."""
    guard = {name: PRESETS["precise"].values[name] for name in ("no_repeat_ngram_size", "repetition_penalty")}
    assert guard["no_repeat_ngram_size"] > 0
    for layers in ({"user": {"strategy": "beam"}}, {"command": {"strategy": "beam"}}, {"server": {"strategy": "beam"}}):
        resolved = resolve(**layers)
        chosen = {name: getattr(resolved.settings, name) for name in guard}
        assert chosen == guard, layers
        assert resolved.sources["no_repeat_ngram_size"] == "strategy"
    # A saved sampling preset (which sets the controls for sampling) does not hold against beam chosen later.
    balanced = dict(PRESETS["balanced"].values)
    assert (
        resolve(user=balanced, command={"strategy": "beam"}).settings.no_repeat_ngram_size
        == guard["no_repeat_ngram_size"]
    )


def test_repetition_controls_chosen_with_the_strategy_or_later_are_kept() -> None:
    kept = resolve(user={"strategy": "beam", "no_repeat_ngram_size": 0})
    assert kept.settings.no_repeat_ngram_size == 0 and kept.sources["no_repeat_ngram_size"] == "you"
    later = resolve(server={"strategy": "beam"}, user={"no_repeat_ngram_size": 2})
    assert later.settings.no_repeat_ngram_size == 2
    operator = resolve_settings(config_defaults=DecodingSettings(strategy="beam"), max_new_tokens_cap=300)
    assert operator.settings.no_repeat_ngram_size == 0  # config.yaml is the operator's to write
