"""Bounds on JSON read from files (specs, configs), checked without recursion.

Python's ``json`` parses a 60 MB string or a 900-deep nesting happily, and the validators that
walk the result next (pydantic, our own mappers) recurse; a hostile file should get a typed error
here, before any of that, instead of a ``RecursionError`` or a very long validation.
"""

from __future__ import annotations

from typing import Any

from weightio.errors import MalformedFileError, ResourceLimitError

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
