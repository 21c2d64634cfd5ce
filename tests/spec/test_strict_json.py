"""One strict JSON parser for everything read from a file (``spec/json_limits.parse_json``)."""

from __future__ import annotations

import json

import pytest

from weightio.errors import MalformedFileError, ResourceLimitError, SpecValidationError
from weightio.spec import spec_from_json
from weightio.spec.json_limits import parse_json


@pytest.mark.parametrize(("text", "match"), [
    ('{"a": 1, "a": 2}', "appears twice"),
    ('{"a": {"b": [{"c": 1, "c": 1}]}}', "appears twice"),
    ('{"a": 1e400}', "overflows"),
    ('{"a": -1e400}', "overflows"),
    ('{"a": Infinity}', "Infinity"),
    ('{"a": -Infinity}', "Infinity"),
    ('{"a": NaN}', "NaN"),
])
def test_refused(text: str, match: str) -> None:
    with pytest.raises(MalformedFileError, match=match):
        parse_json(text, file="f.json", what="the thing")


def test_nonfinite_constants_only_where_the_format_allows_them() -> None:
    assert parse_json('{"a": Infinity}', what="config.json", nonfinite=True)["a"] == float("inf")
    with pytest.raises(MalformedFileError, match="overflows"):
        parse_json('{"a": 1e400}', what="config.json", nonfinite=True)


def test_limits_apply() -> None:
    with pytest.raises(ResourceLimitError):
        parse_json("[" * 300 + "]" * 300, what="x")


@pytest.mark.parametrize("text", ['{"name": "a", "name": "b"}', '{"format_version": 1e400}',
                                  '{"format_version": Infinity}'])
def test_spec_json_refuses_with_spec_errors(text: str) -> None:
    with pytest.raises(SpecValidationError):
        spec_from_json(text, file="m.safetensors")



def _spec_text(units: object = 3, rate: object = 0.5) -> str:
    """A valid spec's JSON text (dropout, then dense), with the two values under test."""
    return json.dumps({
        "name": "m",
        "provenance": {"source_framework": "weightio", "weightio_version": "0", "created_at": "t"},
        "inputs": [{"name": "x", "shape": [4]}],
        "layers": [
            {"kind": "dropout", "name": "d", "rate": rate},
            {"kind": "dense", "name": "fc1", "units": units, "in_features": 4,
             "weight": {"key": "fc1.weight", "shape": [3, 4], "dtype": "F32"},
             "bias": {"key": "fc1.bias", "shape": [3], "dtype": "F32"}},
        ],
        "outputs": [{"name": "y", "layer": "fc1"}],
    })


def test_spec_json_values_are_not_coerced() -> None:
    """A header's values keep their JSON types: 3.0, true or "3" is no integer (pydantic's lax
    mode would read each as 3, so a file weightio never wrote would pass as valid)."""
    assert spec_from_json(_spec_text(), file="m.safetensors").layers[1].units == 3
    for bad in (3.0, True, "3"):
        with pytest.raises(SpecValidationError, match=r"fc1.*units"):
            spec_from_json(_spec_text(units=bad), file="m.safetensors")


def test_an_integer_is_a_float() -> None:
    """JSON has one number type: ``0`` where a float is wanted is exact, so it is accepted."""
    assert spec_from_json(_spec_text(rate=0), file="m.safetensors").layers[0].rate == 0.0
    with pytest.raises(SpecValidationError, match=r"'d'.*rate"):
        spec_from_json(_spec_text(rate="0.5"), file="m.safetensors")
