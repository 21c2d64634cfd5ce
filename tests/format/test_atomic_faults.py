"""Fault tests for the atomic writer (RELIABILITY.md F1-F5, F9): whole or not at all.

Real writes of real archives to a real filesystem; faults are real signals and resource limits
(F1, F3) or OSErrors injected at the system-call boundary the writer uses (F2-F4).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import weightio.format.atomic
import weightio.format.single as single  # the archive writer, which calls write_hashed
from weightio.errors import WriteError
from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import load, save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance

HERE = Path(__file__).parent
TESTS = HERE.parent
ROOT = TESTS.parent
TEMP = re.compile(r"^\.model\.safetensors\.weightio-tmp-[0-9a-f]{12}$")


def blob(seed: int, size: int = 250_000) -> Archive:
    arrays = {"a": np.random.default_rng(seed).standard_normal(size).astype("f4"),
              "b": np.full(7, seed, "i8")}
    layer = OpaqueLayer(name="blob", tensors={k: tensor_ref(f"blob.{k}", a) for k, a in arrays.items()})
    spec = ModelSpec(name="blob", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="faults", created_at="now"))
    return Archive(spec, {f"blob.{k}": a for k, a in arrays.items()})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def existing(tmp_path: Path) -> tuple[Path, str]:
    target = tmp_path / "model.safetensors"
    save(blob(1), target)
    return target, sha(target)


def _unchanged(target: Path, digest: str) -> None:
    assert sha(target) == digest
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


# --- F1 -----------------------------------------------------------------------------------------

def test_f1_sigkill_at_20_random_points_leaves_old_or_new(tmp_path: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(TESTS / "hostile" / "kill_writer.py"), str(tmp_path),
                          "20", "20261123"], check=True, capture_output=True, text=True, env=env,
                         timeout=300)
    report = json.loads(out.stdout)
    results = report["results"]
    assert len(results) >= 20
    for r in results:
        assert r["sha"] in (report["old"], report["new"]), r  # never absent, empty or partial
        assert all(TEMP.match(name) for name in r["leftovers"]), r
    outcomes = {r["sha"] == report["new"] for r in results}
    left = sum(bool(r["leftovers"]) for r in results)
    print(f"F1: {len(results)} kills over a {report['duration']:.2f}s write: "
          f"{sum(r['sha'] == report['old'] for r in results)} left the old file, "
          f"{sum(r['sha'] == report['new'] for r in results)} the new; {left} left a temp file")
    assert outcomes == {False, True} or left > 0, "no kill landed mid-write; widen the window"
    # The next write removes stale leftovers (older than a minute: a live writer's are younger).
    temps = [p for p in tmp_path.iterdir() if TEMP.match(p.name)]
    old = time.time() - 3600
    for p in temps:
        os.utime(p, (old, old))
    save(blob(3), tmp_path / "model.safetensors")
    assert not [p for p in tmp_path.iterdir() if TEMP.match(p.name)]
    load(tmp_path / "model.safetensors", verify=True)


# --- F2 / F3 / F4 -------------------------------------------------------------------------------

def test_f2_exception_mid_write_gives_write_error(existing: tuple[Path, str], monkeypatch) -> None:
    target, digest = existing

    def failing(handle, ordered, *_):  # write part of the data, then the device fails
        handle.write(b"\0" * 1000)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(single, "write_hashed", failing)
    with pytest.raises(WriteError, match="model.safetensors"):
        save(blob(2), target)
    monkeypatch.undo()
    _unchanged(target, digest)


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_f3_enospc_gives_write_error(existing: tuple[Path, str], monkeypatch, call: str) -> None:
    target, digest = existing

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if call == "fsync":
        monkeypatch.setattr(weightio.format.atomic.os, "fsync", no_space)
    else:
        monkeypatch.setattr(single, "write_hashed", no_space)
    with pytest.raises(WriteError, match="disk is full"):
        save(blob(2), target)
    monkeypatch.undo()
    _unchanged(target, digest)


def test_f4_fsync_eio_fails_the_write_without_rename(existing: tuple[Path, str], monkeypatch) -> None:
    target, digest = existing
    renamed = []
    monkeypatch.setattr(weightio.format.atomic.os, "fsync",
                        lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    real_replace = os.replace
    monkeypatch.setattr(weightio.format.atomic.os, "replace", lambda *a: renamed.append(a) or real_replace(*a))
    with pytest.raises(WriteError, match="model.safetensors"):
        save(blob(2), target)
    monkeypatch.undo()
    assert renamed == []
    _unchanged(target, digest)


_FSIZE_SCRIPT = r"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
sys.path.insert(0, sys.argv[2])
from test_atomic_faults import blob
from weightio.format.store import save
from weightio.errors import WriteError
try:
    save(blob(2, size=1_000_000), Path(sys.argv[1]))
except WriteError as exc:
    print(type(exc).__name__, exc)
"""


def test_f3_rlimit_fsize_gives_write_error(existing: tuple[Path, str]) -> None:
    target, digest = existing
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, str(target), str(HERE)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("WriteError"), out.stdout + out.stderr
    assert "larger than this process may write" in out.stdout
    _unchanged(target, digest)


# --- F5 -----------------------------------------------------------------------------------------

_WRITERS_SCRIPT = r"""
import multiprocessing, sys
sys.path.insert(0, sys.argv[2])
from test_atomic_faults import blob
from weightio.format.store import save
from weightio.errors import TargetExistsError

def writer(target, seed, barrier, overwrite):
    archive = blob(seed)
    barrier.wait()
    try:
        save(archive, target, overwrite=overwrite)
    except TargetExistsError:
        sys.exit(17)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")  # a fresh single-threaded parent: forking is safe
    barrier = ctx.Barrier(8)
    overwrite = sys.argv[3] == "overwrite"
    procs = [ctx.Process(target=writer, args=(sys.argv[1], seed, barrier, overwrite))
             for seed in range(10, 18)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    print(" ".join(str(p.exitcode) for p in procs))
"""


def test_f5_eight_concurrent_writers_leave_exactly_one_output(tmp_path: Path) -> None:
    """8 processes released together by a barrier: the target is exactly one writer's bytes."""
    target = tmp_path / "model.safetensors"
    expected = {}
    for seed in range(10, 18):
        save(blob(seed), tmp_path / f"w{seed}.safetensors")
        expected[sha(tmp_path / f"w{seed}.safetensors")] = seed
        os.unlink(tmp_path / f"w{seed}.safetensors")
    assert len(expected) == 8
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _WRITERS_SCRIPT, str(target), str(HERE), "overwrite"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.stdout.split() == ["0"] * 8, out.stdout + out.stderr
    assert sha(target) in expected
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no stray temp files
    load(target, verify=True)


def test_f5_eight_writers_racing_for_a_new_name_without_overwrite(tmp_path: Path) -> None:
    """``overwrite=False`` publishes with ``os.link``: exactly one writer wins, seven get
    ``TargetExistsError`` (a ``FileExistsError``), and the file is the winner's, whole."""
    target = tmp_path / "model.safetensors"
    expected = {}
    for seed in range(10, 18):
        save(blob(seed), tmp_path / f"w{seed}.safetensors")
        expected[sha(tmp_path / f"w{seed}.safetensors")] = seed
        os.unlink(tmp_path / f"w{seed}.safetensors")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _WRITERS_SCRIPT, str(target), str(HERE), "no-overwrite"],
                         capture_output=True, text=True, env=env, timeout=180)
    codes = out.stdout.split()
    assert sorted(codes) == ["0"] + ["17"] * 7, out.stdout + out.stderr
    assert expected[sha(target)] == range(10, 18)[codes.index("0")]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp left by the losers
    load(target, verify=True)


# --- F9 -----------------------------------------------------------------------------------------

def test_f9_target_is_a_folder(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.safetensors"
    target.mkdir()
    monkeypatch.setattr(single, "write_hashed",
                        lambda *a: pytest.fail("serialization started"))
    with pytest.raises(WriteError, match="folder"):
        save(blob(1), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_f9_missing_parent_folder(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="does not exist"):
        save(blob(1), tmp_path / "nope" / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_f9_read_only_parent(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="not writable"):
            save(blob(1), folder / "model.safetensors")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_temp_file_sits_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    with weightio.format.atomic.atomic_write(target) as handle:
        handle.write(b"x")
        temps = [p for p in tmp_path.iterdir()]
        assert len(temps) == 1 and TEMP.match(temps[0].name)
    assert target.read_bytes() == b"x"
