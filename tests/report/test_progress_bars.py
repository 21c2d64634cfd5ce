"""Long jobs draw a progress bar (plot, verify); forced on here with the size threshold at 0
and ``FORCE_COLOR`` (stderr is not a terminal under pytest), the results are the same as
without one; with no terminal and nothing forcing one, rich is not even imported."""

from __future__ import annotations

import numpy as np
import pytest

import weightio
import weightio.progress
from weightio.report.plots import archive_pngs

pytest.importorskip("matplotlib")
torch = pytest.importorskip("torch")


def test_plot_and_verify_with_a_bar(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    weightio.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                         torch.nn.Linear(4 * 4 * 4, 2)), path,
                     example_input=torch.zeros(1, 3, 6, 6))
    archive = weightio.load(path)
    quiet = archive_pngs(archive)
    monkeypatch.setattr(weightio.progress, "THRESHOLD_BYTES", 0)
    monkeypatch.setenv("FORCE_COLOR", "1")
    drawn = archive_pngs(archive, progress=True)
    assert [name for name, _ in drawn] == [name for name, _ in quiet]
    assert archive.verify(progress=True) == archive.verify()
    assert np.isfinite(weightio.run(archive, np.ones((1, 3, 6, 6), np.float32))).all()


def test_convert_write_reports_every_tensor(tmp_path, monkeypatch):
    """convert's archive write reports its bytes into the bar (forced on with a 0 threshold)."""
    seen: list[int] = []
    from weightio.progress import reporting
    from weightio.verbs.convert import archive_bytes

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2))
    with reporting(seen.append):
        result = weightio.convert(module, tmp_path / "m.safetensors")
    assert sum(seen) == archive_bytes(result.archive) and len(seen) == 4
    monkeypatch.setattr(weightio.progress, "THRESHOLD_BYTES", 0)
    monkeypatch.setenv("FORCE_COLOR", "1")
    again = weightio.convert(module, tmp_path / "n.safetensors", progress=True)
    assert again.verification.passed


def test_no_terminal_no_bar_and_no_rich() -> None:
    """A big convert with stderr piped: rich would draw nothing, so it is not imported."""
    import subprocess
    import sys

    code = """
import sys, weightio.progress as p
p.THRESHOLD_BYTES = 0
with p.byte_progress("x", 100, enabled=True) as advance:
    advance(100)
print("rich" in sys.modules)
"""
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip() == "False" and done.stderr == ""
