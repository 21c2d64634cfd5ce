"""docs/layers.md is generated from the registries; it must match what the script prints now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_layer_matrix_is_current() -> None:
    # In a subprocess: prove the generator fills every registry without importing a framework.
    code = (
        "import sys, runpy; g = runpy.run_path('scripts/gen_layer_matrix.py');"
        "sys.stdout.write(g['render']());"
        "heavy = [m for m in ('torch', 'keras', 'tensorflow', 'sklearn') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    committed = (ROOT / "docs" / "layers.md").read_text(encoding="utf-8")
    assert out == committed, "docs/layers.md is stale: run python scripts/gen_layer_matrix.py"
    for kind in ("conv", "pool", "flatten", "dense"):
        assert f"| `{kind}` |" in committed
