"""The battery's one registry: every item module registers its generators here, in file order.

``generate.py`` imports the item modules after its own items, so ids keep the order of the
RELIABILITY.md list; each generator takes the item's folder and returns its manifest entry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Generator = Callable[[Path], dict[str, Any]]

ITEMS: list[tuple[str, Generator]] = []
MAL = ["MalformedFileError"]


def item(name: str) -> Callable[[Generator], Generator]:
    """Register the decorated generator as battery item ``name`` (the test id)."""
    def register(fn: Generator) -> Generator:
        if any(existing == name for existing, _ in ITEMS):
            raise ValueError(f"battery item {name!r} registered twice")
        ITEMS.append((name, fn))
        return fn

    return register
