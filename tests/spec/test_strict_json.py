"""One strict JSON parser for everything read from a file (``spec/json_limits.parse_json``)."""

from __future__ import annotations

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
