"""Only regular files are read, and only regular files (or links, replaced) are written over.

A FIFO given as a source makes ``open()`` wait forever; a device reads without end; renaming a
new file over a FIFO or a device node replaces the node (as root, ``/dev/null``). Each source
below is refused before anything opens it (checked in a child with a deadline, since a blocking
``open`` would hang the test), and each special target is left as it was with ``WriteError``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.errors import ExternalReferenceError, WriteError
from weightio.format.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[2]

_READ_ALL = r"""
import json, sys
import weightio
from weightio.errors import WeightioError
from weightio.frameworks.keras.files.reader import read_keras_path
from weightio.frameworks.torch.files.pickle import read_checkpoint
from weightio.format.store import load
calls = {
    "read": lambda p: weightio.read(p),
    "load": lambda p: load(p),
    "keras": lambda p: read_keras_path(p),
    "pt": lambda p: read_checkpoint(p),
}
results = {}
for name, path in json.loads(sys.argv[1]):
    for call, fn in calls.items():
        try:
            fn(path)
            results[f"{name}/{call}"] = "read"
        except WeightioError as exc:
            results[f"{name}/{call}"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_and_devices_are_refused_before_open(tmp_path: Path) -> None:
    fifos = {}
    for name in ("model.safetensors", "model.pt", "model.keras", "model.safetensors.index.json",
                 "noext"):
        os.mkfifo(tmp_path / name)
        fifos[name] = str(tmp_path / name)
    devices = {"dev_zero": "/dev/zero", "dev_null": "/dev/null"}
    cases = list(fifos.items()) + list(devices.items())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _READ_ALL, json.dumps(cases)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert len(results) == 4 * len(cases)
    for where, outcome in results.items():
        assert outcome.startswith("UnsupportedSourceError"), (where, outcome)
        assert "FIFO" in outcome or "device" in outcome, (where, outcome)


def test_a_fifo_shard_and_architecture_never_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "s1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"w": "s1.safetensors"}}))
    os.mkfifo(tmp_path / "config.json")
    script = (
        "import sys, weightio\n"
        "from weightio.errors import WeightioError\n"
        "for path, kw in ((sys.argv[1], {}), (sys.argv[2], {'architecture': sys.argv[3]})):\n"
        "    try:\n"
        "        weightio.read(path, **kw)\n"
        "    except WeightioError as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    weights = tmp_path / "m.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.safetensors.index.json"),
                          str(weights), str(tmp_path / "config.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    assert lines[0].startswith("MalformedFileError") and "s1.safetensors" in lines[0] and "FIFO" in lines[0]
    assert lines[1].startswith("UnsupportedSourceError") and "config.json" in lines[1]


def test_an_index_that_links_out_of_its_folder_is_an_external_reference(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {}}))
    inside = tmp_path / "set"
    inside.mkdir()
    (inside / "model.safetensors.index.json").symlink_to(outside / "model.safetensors.index.json")
    for path in (inside / "model.safetensors.index.json", inside):
        with pytest.raises(ExternalReferenceError, match="outside its folder"):
            weightio.read(path)


def _special_targets(tmp_path: Path) -> list[Path]:
    targets = []
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "out.safetensors")
        targets.append(tmp_path / "out.safetensors")
    try:
        os.mknod(tmp_path / "null.safetensors", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append(tmp_path / "null.safetensors")
    except (PermissionError, AttributeError, OSError):
        pass  # making a device node needs CAP_MKNOD
    if not targets:
        pytest.skip("cannot make FIFOs or device nodes here")
    return targets


def test_a_fifo_or_device_target_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    from weightio.format.provenance import provenance
    from weightio.format.weights_only import archive_from_state_dict

    archive = archive_from_state_dict({"w": np.ones(2, "f4")}, name="x",
                                      provenance=provenance("weightio", framework_version=None,
                                                            source_class=None))
    for target in _special_targets(tmp_path):
        before = os.lstat(target)
        with pytest.raises(WriteError, match="not a regular file"):
            weightio.save(archive, target)
        with pytest.raises(WriteError, match="not a regular file"):
            with atomic_write(target) as handle:
                handle.write(b"x")
        after = os.lstat(target)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
        assert after.st_ino == before.st_ino and after.st_rdev == before.st_rdev
        assert [p.name for p in tmp_path.iterdir() if ".weightio-tmp-" in p.name] == []
