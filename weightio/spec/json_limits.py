"""JSON read from files (headers, specs, configs, shard indexes): one strict parser, bounded.

Python's ``json`` is lenient where a file format must not be: a repeated key silently keeps the
last value (so two readers can see two different files), ``NaN``/``Infinity`` are accepted, and
``1e400`` quietly becomes ``inf``. It also parses a 60 MB string or a 900-deep nesting happily,
and the validators that walk the result next (pydantic, our own mappers) recurse. ``parse_json``
is the one parser every reader of JSON from a file uses: duplicate keys anywhere, numerals that
overflow a float, and (unless the format allows them) ``NaN``/``Infinity`` are typed errors, and
``check_json_limits`` bounds depth and strings before anything walks the result recursively.
"""

from __future__ import annotations

import math
from typing import Any

from weightio.errors import MalformedFileError, ResourceLimitError, WeightioError

#: Deepest nesting of lists/objects weightio accepts in a spec or model config.
MAX_DEPTH = 200
#: Longest single string (a name, a config value) weightio accepts, in characters.
MAX_STRING = 4 * 1024 * 1024


def check_json_limits(data: Any, *, file: object | None = None, what: str = "spec") -> None:
    r"""Raise ``ResourceLimitError`` if ``data`` nests deeper than ``MAX_DEPTH`` or holds a longer
    string than ``MAX_STRING`` (keys included), and ``MalformedFileError`` if a string is not
    valid Unicode (JSON's ``\ud800`` escape decodes to a lone surrogate, which no UTF-8 writer
    accepts: the archive written from it could never be saved).
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise ResourceLimitError(
                    f"the {what} holds a string of {len(value)} characters, over the "
                    f"{MAX_STRING}-character limit; the file is malformed or hostile",
                    file=file,
                )
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedFileError(
                    f"the {what} holds a string that is not valid Unicode ({value[:40]!r}: a lone "
                    "surrogate escape); the file is malformed or hostile",
                    file=file,
                ) from None
        elif isinstance(value, (list, dict)):
            if depth >= MAX_DEPTH:
                raise ResourceLimitError(
                    f"the {what} nests deeper than {MAX_DEPTH} levels; the file is malformed "
                    "or hostile",
                    file=file,
                )
            items = list(value.items()) if isinstance(value, dict) else value
            for element in items:
                if isinstance(element, tuple):
                    stack.append((element[0], depth + 1))
                    stack.append((element[1], depth + 1))
                else:
                    stack.append((element, depth + 1))


class _Refused(ValueError):
    """Raised inside ``json.loads`` hooks; ``parse_json`` turns it into the caller's error."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {key[:100]!r} appears twice in one object (JSON readers "
                           "disagree on which value wins)")
        result[key] = value
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} overflows a float")
    return value


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def parse_json(
    raw: bytes | str,
    *,
    file: object | None = None,
    what: str,
    error: type[WeightioError] = MalformedFileError,
    nonfinite: bool = False,
    limits: bool = True,
) -> Any:
    """Parse JSON from a file strictly, then bound it (``check_json_limits``).

    Args:
        raw: The bytes (UTF-8) or text.
        what: What it is, for messages (``"the header"``, ``"config.json"``).
        error: The error class for invalid JSON (``SpecValidationError`` for specs).
        nonfinite: Accept ``NaN``/``Infinity``/``-Infinity`` (Keras writes them in configs);
            a numeral that overflows (``1e400``) is refused either way.
        limits: Apply ``check_json_limits`` (a safetensors header, whose structure its reader
            checks entry by entry, carries the whole spec as one long string, and skips it).

    Raises:
        error: not UTF-8, not JSON, a duplicate key, a non-finite number.
        ResourceLimitError: nesting or a string over the limits.
    """
    import json

    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
        data = json.loads(text, object_pairs_hook=_unique, parse_float=_finite_float,
                          parse_constant=_constant if nonfinite else _no_constant)
    except _Refused as exc:
        raise error(f"{what} is not valid: {exc}", file=file) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid UTF-8 JSON ({str(exc)[:200]})", file=file) from None
    if limits:
        check_json_limits(data, file=file, what=what)
    return data
