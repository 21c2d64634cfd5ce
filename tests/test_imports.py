"""`import weightio` and `weightio --help` load no framework (checked in fresh processes)."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "sklearn", "jax", "matplotlib")


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _frameworks(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FRAMEWORKS)


def test_import_weightio_loads_no_framework() -> None:
    assert _frameworks(_modules_after("import weightio")) == []


def test_help_loads_no_framework_and_nothing_heavy() -> None:
    code = (
        "import sys\nsys.argv = ['weightio', '--help']\nfrom weightio.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    modules = _modules_after(code)
    assert _frameworks(modules) == []
    # --help should not pay for numpy or pydantic either: it must answer instantly.
    assert "numpy" not in modules and "pydantic" not in modules


def test_reading_an_archive_loads_no_framework(tmp_path) -> None:
    code = f"""
import numpy as np, weightio
from weightio.format.weights_only import archive_from_state_dict
from weightio.format.provenance import provenance
a = archive_from_state_dict({{"fc.weight": np.ones((2, 2), "f4")}}, name="m",
    provenance=provenance("unknown", framework_version=None, source_class=None))
weightio.save(a, {str(tmp_path / "m.safetensors")!r})
weightio.read({str(tmp_path / "m.safetensors")!r})
"""
    assert _frameworks(_modules_after(code)) == []


def test_diff_inspect_and_explain_load_no_framework_nor_matplotlib() -> None:
    code = """
import numpy as np, weightio
from weightio.analysis.inspect import inspect_archive
a = {"fc.weight": np.ones((2, 3), "f4"), "fc.bias": np.zeros(2, "f4")}
report = weightio.diff(a, {k: v + 1 for k, v in a.items()})
assert not report.identical
inspect_archive(weightio.read(a), stats=True)
"""
    assert _frameworks(_modules_after(code)) == []
