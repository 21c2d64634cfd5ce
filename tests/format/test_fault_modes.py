"""F10: every writer gives new files ``0o666 & ~umask`` and replaced files their old mode.

``mkstemp``-style temp files start at 0o600; a writer that renamed one into place unchanged would
make every model private (or, replacing a shared file, silently change who may read it). The
writers run in ``tests/hostile/write_modes.py``, a subprocess, under several umasks, so this
process's umask is never changed; each file is then set to 0o604 (no umask yields it) and written
again. One subprocess serves every parametrized case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TESTS = HERE.parent
ROOT = TESTS.parent
UMASKS = ["022", "077", "002", "027"]
WRITERS = ["archive", "safetensors-state-dict", "shards+index", "keras-file", "keras-model-save",
           "skops", "joblib", "pt-state-dict", "pt-archive-state-dict", "html", "png"]
REPLACED_MODE = 0o604


@pytest.fixture(scope="module")
def modes(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("f10")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(TESTS / "hostile" / "write_modes.py"), str(folder),
                          *UMASKS], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("writer", WRITERS)
def test_f10_new_files_get_umask_mode_and_replaced_files_keep_theirs(modes, writer: str) -> None:
    for umask in UMASKS:
        result = modes[oct(int(umask, 8))][writer]
        if result is None:
            pytest.skip(f"{writer}: its framework is not installed")
        assert result["new"], f"{writer} wrote nothing"
        expected = 0o666 & ~int(umask, 8)
        assert {f: oct(m) for f, m in result["new"].items()} == \
            {f: oct(expected) for f in result["new"]}, (writer, umask)
        assert {f: oct(m) for f, m in result["replaced"].items()} == \
            {f: oct(REPLACED_MODE) for f in result["new"]}, (writer, umask)

