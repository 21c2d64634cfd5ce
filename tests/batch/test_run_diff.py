"""``weightio diff RUN_A/ RUN_B/``: two runs' checkpoints paired by step, each pair one Dask task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
torch = pytest.importorskip("torch")

from batch_helpers import cli, write_checkpoints

from weightio.batch import diff_runs


@pytest.fixture(scope="module")
def scheduler() -> str:
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def test_runs_paired_by_step(tmp_path: Path, scheduler: str) -> None:
    a = tmp_path / "a"
    write_checkpoints(a, 5)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    # run B: step 300's last layer nudged, one step more, and step 100 missing
    changed = torch.load(b / "step-000300.pt", weights_only=True)
    changed["model"]["2.weight"][0, 0] += 0.5
    torch.save(changed, b / "step-000300.pt")
    shutil.copy(b / "step-000500.pt", b / "step-000600.pt")
    (b / "step-000100.pt").unlink()
    report = diff_runs(a, b, scheduler=scheduler)
    assert [s.step for s in report.steps] == [200, 300, 400, 500]
    assert report.only_a == [100] and report.only_b == [600] and not report.identical
    assert [s.identical for s in report.steps] == [True, False, True, True]
    moved = {layer.name: layer for layer in report.steps[1].layers}
    assert moved["0"].identical and moved["0"].relative_l2 == 0.0
    w = torch.load(a / "step-000300.pt", weights_only=True)["model"]
    norm = np.sqrt(sum(float((w[k].double() ** 2).sum()) for k in ("2.weight", "2.bias")))
    assert moved["2"].relative_l2 == pytest.approx(0.5 / norm, rel=1e-6)
    assert report.most_different == "step 300, layer 2"


def test_cli_identical_runs_exit_0_and_others_1(tmp_path: Path, scheduler: str) -> None:
    write_checkpoints(tmp_path / "a", 3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    same = cli("diff", str(tmp_path / "a"), str(tmp_path / "b"), "--scheduler", scheduler, "--json")
    assert same.returncode == 0, same.stderr
    shape = json.loads(same.stdout)
    assert shape["format"] == "weightio.rundiff/1" and shape["identical"]
    assert [s["step"] for s in shape["steps"]] == [100, 200, 300]
    (tmp_path / "b" / "step-000300.pt").unlink()
    other = cli("diff", str(tmp_path / "a"), str(tmp_path / "b"), "--scheduler", scheduler)
    assert other.returncode == 1, other.stderr
    assert "steps only in A: [300]" in other.stdout
