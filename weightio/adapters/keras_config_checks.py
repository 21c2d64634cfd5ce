"""Checks on a Keras config read from a file, before any of it is mapped.

Keras layers may name files to read at build time: ``StringLookup``/``IntegerLookup``/
``TextVectorization`` take ``vocabulary`` (and ``idf_weights``) as a path, which Keras opens with
``tf.io.gfile`` — a local file such as ``/etc/hostname`` or a URL. A file downloaded from a stranger
must not make weightio (or the Keras model it writes) read anything outside it, so a string there
is refused with ``ExternalReferenceError``; an inline list is data and stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightio.errors import ExternalReferenceError
from weightio.json_limits import check_json_limits

#: Layer config fields Keras treats as a path when they hold a string.
FILE_FIELDS = ("vocabulary", "idf_weights")


def check_config(data: Any, *, file: Path, what: str) -> None:
    """Bound the config's nesting and strings, and refuse layer fields that name a file."""
    check_json_limits(data, file=file, what=what)
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            config = value.get("config")
            if "class_name" in value and isinstance(config, dict):
                for field in FILE_FIELDS:
                    if isinstance(config.get(field), str):
                        raise ExternalReferenceError(
                            f"{value.get('class_name')} field {field!r} names a file or URL "
                            f"({config[field][:200]!r}); weightio reads nothing outside the model "
                            "file. Re-save the model with the vocabulary inline (a list)",
                            file=file,
                            layer=str(config.get("name") or ""),
                        )
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
