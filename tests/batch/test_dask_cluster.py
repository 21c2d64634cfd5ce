"""A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (ephemeral ports),
started by the tests: ``weightio batch convert --scheduler`` converts generated checkpoints, two of
them corrupt (reported and skipped), into archives bit-identical to the one-at-a-time path; and a
worker SIGKILLed in the middle of writing an archive leaves no partial file, its task re-runs on
the other worker and every archive verifies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("torch")

from batch_helpers import EPOCH, dask_cluster, env, temp_files, write_checkpoints

import weightio

HERE = Path(__file__).resolve().parent


def _references(sources: list[Path], folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """What ``weightio.convert`` (the function behind ``weightio convert``) writes for each file."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    folder.mkdir()
    found = {}
    for source in sources:
        target = folder / (source.stem + ".safetensors")
        weightio.convert(source, target)
        found[target.name] = target.read_bytes()
    return found


def _check_outputs(shape: dict, out: Path, references: dict[str, bytes], corrupt: set[str]) -> None:
    by_name = {Path(f["source"]).name: f for f in shape["files"]}
    for name in corrupt:
        assert by_name[name]["status"] == "failed"
        assert by_name[name]["error"]["type"] == "MalformedFileError", by_name[name]
        assert not (out / (Path(name).stem + ".safetensors")).exists()
    converted = {Path(f["destination"]).name for f in shape["files"] if f["status"] == "converted"}
    assert converted == set(references)
    for name, data in references.items():
        assert (out / name).read_bytes() == data, name  # bit-identical
        weightio.load(out / name, verify=True)
    assert temp_files(out) == []


def test_twenty_checkpoints_two_corrupt_on_a_real_scheduler(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sources = write_checkpoints(tmp_path / "run", 20, corrupt=(4, 13))
    corrupt = {sources[4].name, sources[13].name}
    references = _references([s for s in sources if s.name not in corrupt], tmp_path / "one", monkeypatch)
    with dask_cluster(tmp_path / "dask", workers=2) as cluster:
        done = subprocess.run(
            [sys.executable, "-m", "weightio", "batch", "convert", str(tmp_path / "run" / "*.pt"),
             "--out", str(tmp_path / "out"), "--scheduler", cluster.address, "--json"],
            capture_output=True, text=True, timeout=300, env=env())
        addresses = set(_workers_of(cluster.address))
    assert done.returncode == 1, done.stderr  # two files failed
    shape = json.loads(done.stdout)
    assert shape["scheduler"] == cluster.address and shape["workers"] == 2
    assert shape["counts"] == {"converted": 18, "skipped": 0, "failed": 2}
    assert len(addresses) == 2 and {f["worker"] for f in shape["files"]} <= addresses
    _check_outputs(shape, tmp_path / "out", references, corrupt)


def _workers_of(address: str) -> list[str]:
    from distributed import Client

    with Client(address, timeout=30) as client:
        return list(client.nthreads())


def test_a_worker_killed_mid_write_leaves_no_partial_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sources = write_checkpoints(tmp_path / "run", 8, corrupt=(3,))
    corrupt = {sources[3].name}
    references = _references([s for s in sources if s.name not in corrupt], tmp_path / "one", monkeypatch)
    marker = tmp_path / "paused"
    out = tmp_path / "out"
    with dask_cluster(tmp_path / "dask", workers=2,
                      worker_env=[{"WEIGHTIO_TEST_PAUSE_MARKER": str(marker)}, {}],
                      preload=[str(HERE / "pause_preload.py"), None]) as cluster:
        batch = subprocess.Popen(
            [sys.executable, "-m", "weightio", "batch", "convert", str(tmp_path / "run"),
             "--out", str(out), "--scheduler", cluster.address, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        try:
            deadline = time.monotonic() + 120
            while not (marker.exists() and marker.read_text()):
                assert batch.poll() is None, batch.communicate()
                assert time.monotonic() < deadline, "worker 0 never started writing an archive"
                time.sleep(0.05)
            # worker 0 is mid-write of file INDEX: its temp file holds only a header
            index = int(re.search(r"weightio-convert-(\d+)-", marker.read_text()).group(1))
            victim = sorted(sources)[index].stem + ".safetensors"
            partial = [p for p in temp_files(out) if p.name.startswith(f".{victim}.weightio-tmp-")]
            assert len(partial) == 1 and not (out / victim).exists()
            cluster.kill_worker(0)
            stdout, stderr = batch.communicate(timeout=240)
        finally:
            if batch.poll() is None:
                batch.kill()
    assert batch.returncode == 1, stderr  # the corrupt file; every other one converted
    shape = json.loads(stdout)
    assert shape["counts"] == {"converted": 7, "skipped": 0, "failed": 1}
    rerun = next(f for f in shape["files"] if Path(f["destination"]).name == victim)
    assert rerun["status"] == "converted"  # the killed task ran again, on the other worker
    assert not partial[0].exists()
    _check_outputs(shape, out, references, corrupt)
