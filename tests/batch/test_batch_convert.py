"""``weightio.batch.convert`` / ``weightio batch convert`` on a local Dask cluster: per-file results
and typed errors, resuming, bit-identical archives, the JSON shape, refusals before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("torch")

from batch_helpers import EPOCH, cli, one_at_a_time, temp_files, write_checkpoints

import weightio
from weightio.batch import convert


@pytest.fixture(scope="module")
def scheduler() -> str:
    """One local cluster (2 worker processes on 127.0.0.1) for the module's batches."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def run(tmp_path: Path) -> Path:
    write_checkpoints(tmp_path / "run", 6, corrupt=(2,))
    return tmp_path / "run"


def test_each_file_gets_its_archive_or_its_typed_error(run: Path, tmp_path: Path, scheduler: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    seen = []
    report = convert([str(run / "*.pt")], tmp_path / "out", scheduler=scheduler, on_result=seen.append)
    assert report.counts == {"converted": 5, "skipped": 0, "failed": 1}
    assert not report.ok and len(seen) == 6
    bad = report.failed()[0]
    assert bad.source.endswith("step-000300.pt") and bad.error.type == "MalformedFileError"
    assert bad.error.exit_code == 2 and "step-000300.pt" in bad.error.message
    assert not (tmp_path / "out" / "step-000300.safetensors").exists()
    assert [Path(f.source).name for f in report.files] == sorted(p.name for p in run.iterdir())
    for result in report.files:
        if result.status == "converted":
            archive = weightio.load(result.destination, verify=True)
            assert archive.spec.provenance.recorded_source_digest() == result.source_digest
            assert result.worker and result.worker.startswith("tcp://127.0.0.1:")
    # the very bytes `weightio convert` writes for the same file, one at a time
    reference = one_at_a_time(run / "step-000100.pt", tmp_path / "one.safetensors")
    assert (tmp_path / "out" / "step-000100.safetensors").read_bytes() == reference
    assert temp_files(tmp_path) == []


def test_a_rerun_skips_what_is_up_to_date_and_redoes_the_rest(run: Path, tmp_path: Path,
                                                               scheduler: str) -> None:
    out = tmp_path / "out"
    first = convert([str(run)], out, scheduler=scheduler)
    assert first.counts["converted"] == 5
    again = convert([str(run)], out, scheduler=scheduler)
    assert again.counts == {"converted": 0, "skipped": 5, "failed": 1}
    assert all(f.source_digest for f in again.files if f.status == "skipped")
    # a source that changed, and an archive that was damaged, are converted again
    write_checkpoints(tmp_path / "other", 1, seed=7)[0].replace(run / "step-000200.pt")
    damaged = out / "step-000500.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    third = convert([str(run)], out, scheduler=scheduler)
    redone = sorted(Path(f.source).name for f in third.files if f.status == "converted")
    assert redone == ["step-000200.pt", "step-000500.pt"]
    weightio.load(damaged, verify=True)
    forced = convert([str(run)], out, scheduler=scheduler, resume=False)
    assert forced.counts["converted"] == 5


def test_killed_attempts_leave_no_temp_file(run: Path, tmp_path: Path, scheduler: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".step-000100.safetensors.weightio-tmp-0123456789ab"
    stale.write_bytes(b"half an archive")  # what a worker killed mid-write leaves
    report = convert([str(run / "step-000100.pt")], out, scheduler=scheduler)
    assert report.ok and not stale.exists() and temp_files(out) == []


@pytest.mark.slow  # CLI processes on a cluster: the default set keeps the API path
def test_cli_summary_and_json(run: Path, tmp_path: Path, scheduler: str) -> None:
    done = cli("batch", "convert", str(run), "--out", str(tmp_path / "out"), "--scheduler", scheduler)
    assert done.returncode == 1, done.stderr
    assert "5 converted, 0 skipped (up to date), 1 failed" in done.stdout
    assert "MalformedFileError" in done.stdout and "failed" in done.stderr
    again = cli("batch", "convert", str(run / "step-00010*.pt"), str(run / "step-000200.pt"),
                "--out", str(tmp_path / "out"), "--scheduler", scheduler, "--json")
    assert again.returncode == 0, again.stderr
    shape = json.loads(again.stdout)
    assert shape["format"] == "weightio.batch/1" and shape["counts"] == {
        "converted": 0, "skipped": 2, "failed": 0}
    assert {f["status"] for f in shape["files"]} == {"skipped"}
    assert set(shape["files"][0]) == {"source", "destination", "status", "seconds", "source_bytes",
                                      "archive_bytes", "source_digest", "worker", "error"}


@pytest.mark.parametrize(("args", "options", "error", "says"), [
    (["{tmp}/nothing-*.pt"], {}, "InvalidInputError", "matches no file"),
    (["{run}/step-000100.pt", "{tmp}/copy/step-000100.pt"], {}, "InvalidInputError", "would both be written"),
    (["{run}"], {"digest": "md5"}, "InvalidInputError", "digest"),
    (["{run}"], {"samples": 0}, "InvalidInputError", "samples"),
    (["{run}"], {"workers": 0}, "InvalidInputError", "workers"),
    (["{run}"], {"out": "{run}/step-000100.pt"}, "WriteError", "must be a folder"),
])
def test_bad_batches_are_refused_before_any_work(run: Path, tmp_path: Path, args: list[str],
                                                 options: dict, error: str, says: str) -> None:
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "step-000100.pt").write_bytes((run / "step-000100.pt").read_bytes())
    sources = [a.format(tmp=tmp_path, run=run) for a in args]
    out = options.pop("out", str(tmp_path / "out")).format(run=run)
    with pytest.raises(getattr(weightio.errors, error), match=says):
        # an address nobody listens on: refused before any connection is tried
        convert(sources, out, scheduler=None if "workers" in options else "tcp://127.0.0.1:9", **options)


def test_cli_refusals_and_an_unreachable_scheduler_are_one_line(run: Path, tmp_path: Path) -> None:
    for args, says, wait in (
        ([str(tmp_path / "none-*.pt")], "matches no file", "60s"),
        ([str(run)], "cannot reach the Dask scheduler", "1s"),
    ):
        done = cli("batch", "convert", *args, "--out", str(tmp_path / "out"), "--scheduler",
                   "tcp://127.0.0.1:9", extra_env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": wait})
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert says in lines[0]


def test_source_date_epoch_makes_conversions_reproducible(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_checkpoints(tmp_path / "run", 1)[0]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    weightio.convert(source, tmp_path / "a.safetensors")
    first = (tmp_path / "a.safetensors").read_bytes()
    assert weightio.load(tmp_path / "a.safetensors").spec.provenance.created_at == "2023-11-14T22:13:20+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    weightio.convert(source, tmp_path / "b.safetensors")
    assert (tmp_path / "b.safetensors").read_bytes() != first
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(weightio.errors.InvalidInputError, match="SOURCE_DATE_EPOCH"):
        weightio.convert(source, tmp_path / "c.safetensors")
