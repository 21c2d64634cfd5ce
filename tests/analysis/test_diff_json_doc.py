"""``DiffReport.to_json()`` has exactly the fields its documentation shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

import weightio

DOC = Path(__file__).resolve().parents[2] / "docs" / "inspect-and-diff.md"


def test_to_json_matches_the_documented_shape():
    block = re.search(r"### The JSON shape.*?```json\n(.*?)```", DOC.read_text(), re.S).group(1)
    documented = json.loads(block.replace('"...": "same fields"', '"source": null'))
    a = {"fc2.weight": np.ones((8, 16), np.float32), "fc2.bias": np.zeros(8, np.float32)}
    b = {"fc2.weight": np.full((8, 16), 1.01, np.float32), "fc2.bias": np.zeros(8, np.float32)}
    produced = json.loads(weightio.diff(a, b).to_json())
    for path in ("", "a", "summary", "summary.counts"):
        doc, got = documented, produced
        for part in filter(None, path.split(".")):
            doc, got = doc[part], got[part]
        assert set(doc) == set(got), path or "top level"
    assert set(documented["layers"][0]) == set(produced["layers"][0])
    assert set(documented["entries"][0]) == set(produced["entries"][0])
    assert produced["format"] == documented["format"]
