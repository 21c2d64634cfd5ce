"""The README's main job, ``examples/quickstart.sh``, run as a user runs it (minus the install):
its output matches across the three witnesses and holds no line of TensorFlow's logger.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]

#: What TensorFlow's start-up prints from native code: absl's pre-init warning, absl records
#: (``I0000 00:00:…  port.cc:153] oneDNN …``), cpu_feature_guard, CUDA factory registration.
TF_LOGGER = re.compile(
    r"absl::InitializeLog|^[IWEF]\d{4} \d\d:\d\d:|oneDNN custom operations|cpu_feature_guard"
    r"|Unable to register cu|TF-TRT"
)


def test_quickstart_runs_and_holds_no_tensorflow_log_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(WEIGHTIO_PYTHON=sys.executable, WEIGHTIO_EXAMPLE_OUT=str(tmp_path / "out"),
               PYTHONWARNINGS="ignore")
    done = subprocess.run(["bash", str(ROOT / "examples" / "quickstart.sh")], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    noise = [line for line in lines if TF_LOGGER.search(line)]
    assert noise == [], noise
    assert any(line.startswith("ok: ") for line in lines)
    assert sum("worst abs" in line and line.endswith("ok") for line in lines) == 3
    assert (tmp_path / "out" / "regressor.pt2").is_file()
