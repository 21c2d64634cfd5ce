"""F6: readers looping open+verify while a writer rewrites the target see whole versions only.

``tests/hostile/read_during_rewrites.py`` runs a writer and two readers as processes: one reader
loops ``weightio.load(..., verify=True)`` and compares every tensor with the version its spec
names, the other loops ``weightio verify``. The versions have identical names, shapes and dtypes,
so a header of one paired with the bytes of another would only show as a sha256 mismatch (this
caught a real race: ``load`` re-opened the path on first tensor access, after a rewrite could have
replaced it; it now maps the file it read the header from). Sharded sets are covered the same way.
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
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("shard_size,rewrites", [(0, 40), (170_000, 20)], ids=["one-file", "sharded"])
def test_f6_reader_during_rewrites_sees_whole_old_or_new(tmp_path: Path, shard_size, rewrites) -> None:
    out = subprocess.run([sys.executable, str(TESTS / "hostile" / "read_during_rewrites.py"),
                          str(tmp_path / "model.safetensors"), str(rewrites), str(shard_size)],
                         capture_output=True, text=True, env=ENV, timeout=180)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["writer_exit"] == 0
    readers = {r["reader"]: r for r in report["readers"]}
    for reader in readers.values():
        assert reader["failures"] == [], reader["failures"]
        assert reader["loops"] >= 3
    # The loads overlapped the rewrites: they met more than one version.
    assert len(readers["load"]["seen"]) >= 2, readers["load"]
    print(f"F6 {shard_size or 'one file'}: {rewrites} rewrites in {report['duration']:.2f}s, "
          f"{readers['load']['loops']} verified loads (saw {readers['load']['seen']}), "
          f"{readers['cli']['loops']} `weightio verify` runs, no failure")
    expected = {"model.safetensors"} if not shard_size else {
        "model.safetensors.index.json", *(f"model-{k:05d}-of-00004.safetensors" for k in range(1, 5))}
    assert set(report["files"]) == expected  # no temp or generation file left
