"""The rendered JSON's fast encoder writes exactly what json.dumps writes."""

from __future__ import annotations

import json
from enum import IntEnum, StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbappliance.inventory.typed import Duration
from lbappliance.render.jsonfmt import dumps

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(values, st.integers(0, 4))
def test_same_text_as_json_dumps(value: object, indent: int) -> None:
    assert dumps(value, indent=indent, sort_keys=True) == json.dumps(
        value, indent=indent, sort_keys=True
    )


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value",
    [
        {"d": Duration(0.25), "e": Colour.RED, "l": Level.HIGH, "u": "caf\u00e9 \U0001f600 <&>"},
        {1: "int keys go to json.dumps", 2: [1, 2]},
        {"nested": [{}, [], {"a": []}], "": None},
    ],
)
def test_model_values_and_fallbacks(value: object) -> None:
    assert dumps(value, indent=2, sort_keys=True) == json.dumps(value, indent=2, sort_keys=True)


def test_what_json_rejects_it_rejects() -> None:
    with pytest.raises(TypeError):
        dumps({"a": object()}, indent=2, sort_keys=True)
    with pytest.raises(TypeError):
        dumps({1: 1, "a": 2}, indent=2, sort_keys=True)  # unsortable keys


def test_other_options_are_json_dumps_own() -> None:
    value = {"b": [1, 2.5], "a": "x"}
    assert dumps(value) == json.dumps(value)
    assert dumps(value, indent=2) == json.dumps(value, indent=2)  # insertion order
    assert dumps(value, indent=2, sort_keys=True, separators=(",", ":")) == json.dumps(
        value, indent=2, sort_keys=True, separators=(",", ":")
    )
