"""The docs name only what exists: every ``weightio.…`` path in docs/ and the README resolves."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "DEVELOPERS.md"]
#: ``weightio.a.b.c`` inside backticks, optionally followed by a call or signature.
PATH = re.compile(r"`(weightio(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def resolves(dotted: str) -> bool:
    """Import the longest module prefix of ``dotted``, then look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _named_paths() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in PATH.finditer(doc.read_text(encoding="utf-8")):
            found.append((doc.name, match.group(1)))
    return sorted(set(found))


@pytest.mark.parametrize(("doc", "dotted"), _named_paths())
def test_named_path_exists(doc: str, dotted: str) -> None:
    if dotted.startswith("weightio.diff/") or dotted in ("weightio.spec", "weightio.format_version"):
        return
    assert resolves(dotted), f"{doc} names {dotted}, which does not exist"
