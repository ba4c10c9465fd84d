"""Property-based tests: the settings type, cleaning of untrusted text and streamed decoding."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cogs.utils.formats import clean_text
from core.errors import SettingsError
from core.prompts import clean_prompt
from core.settings import FIELDS, DecodingSettings, coerce_field
from model.generation import RowJob, _RowState

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


@given(name=st.sampled_from(list(FIELDS)), value=ANY_VALUE)
def test_any_value_is_either_accepted_in_range_or_rejected_naming_the_field(name: str, value: object) -> None:
    spec = FIELDS[name]
    try:
        settings = DecodingSettings().replace(**{name: value})
    except SettingsError as exc:
        assert exc.field == name and f"`{name}`" in exc.message
        return
    stored = getattr(settings, name)
    if stored is None:
        assert spec.optional
    elif spec.choices:
        assert stored in spec.choices
    else:
        assert isinstance(stored, spec.kind) and not isinstance(stored, bool)
        assert math.isfinite(stored) and spec.minimum <= stored <= spec.maximum


@given(st.dictionaries(st.sampled_from(list(FIELDS)), ANY_VALUE, max_size=5))
def test_a_mapping_round_trips_through_its_fields(values: dict) -> None:
    try:
        settings = DecodingSettings.from_mapping(values)
    except SettingsError:
        return
    stored = {name: getattr(settings, name) for name in FIELDS}  # what the store writes
    assert DecodingSettings.from_mapping(stored) == settings
    for name, value in stored.items():
        assert coerce_field(name, value) == value


@given(st.text())
def test_cleaned_text_cannot_ping_and_encodes(text: str) -> None:
    cleaned = clean_text(text)
    assert "@everyone" not in cleaned and "@here" not in cleaned
    cleaned.encode("utf-8")  # no lone surrogates left
    clean_prompt(text).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.text(max_size=60).map(lambda text: ("text", text)),
        st.lists(st.integers(min_value=0, max_value=399), max_size=40).map(lambda ids: ("ids", ids)),
    )
)
def test_streamed_pieces_add_up_to_the_final_text(tiny_loaded, data: tuple[str, object]) -> None:
    """Token by token, the incremental decoder emits exactly the text the whole row decodes to.

    Covers multi-byte characters split across tokens (held back until whole) and id sequences
    that are not valid UTF-8 at all.
    """
    kind, value = data
    tokenizer = tiny_loaded.tokenizer
    ids = tokenizer(value, add_special_tokens=False)["input_ids"] if kind == "text" else value
    pieces: list[str] = []
    row = _RowState(RowJob("", DecodingSettings(), 0, on_text=pieces.append), tokenizer)
    for token in ids:
        row.add(token)
    row.flush()
    assert "".join(pieces) == row.text
