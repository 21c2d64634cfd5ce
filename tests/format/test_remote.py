"""fsspec URLs in readers and writers, against a real S3-compatible server (moto's server mode on
127.0.0.1, an ephemeral port) started here and stopped after: ranged header reads (inspect of a
32 MiB archive fetches kilobytes), uploads, convert from and to s3://, a batch from a bucket into a
bucket, and the typed errors of a store that fails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import weightio
from weightio.errors import SourceNotFoundError, StorageError, UnsupportedSourceError
from weightio.format import remote

ROOT = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> str:
    """moto's S3 server, its own process on 127.0.0.1 (so what this process reads is the client's
    alone), and a bucket ``weights``; yields the endpoint URL and stops the server after.
    """
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("weights")
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SOURCE_DATE_EPOCH": EPOCH, "PYTHONWARNINGS": "ignore"}


def _rchar() -> int:
    """Bytes this process has read through read()-like calls, sockets included (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


@pytest.fixture(scope="module")
def big(s3: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A 32 MiB archive, written locally and to ``s3://weights/big.safetensors``."""
    rng = np.random.default_rng(0)
    arrays = {f"layer{i}.weight": rng.standard_normal((1024, 1024)).astype("f4") for i in range(8)}
    archive = weightio.read(arrays)
    local = tmp_path_factory.mktemp("big") / "big.safetensors"
    weightio.save(archive, local)
    url = weightio.save(weightio.load(local), "s3://weights/big.safetensors")
    assert url == "s3://weights/big.safetensors"
    return url, local


def test_inspect_of_a_remote_archive_fetches_kilobytes(big: tuple[str, Path]) -> None:
    from weightio.analysis.inspect import inspect_archive
    from weightio.format.single import open_archive_file

    url, local = big
    size = local.stat().st_size
    open_archive_file(url)  # first use: the client and its imports are paid once, here
    before, read_before = remote.traffic(), _rchar()
    archive = open_archive_file(url)
    report = inspect_archive(archive)
    fetched, read = remote.traffic().bytes - before.bytes, _rchar() - read_before
    assert remote.traffic().requests - before.requests == 1  # the header: one ranged request
    here = inspect_archive(weightio.load(local)).model_dump()
    assert here.pop("nonfinite") == [] and report.model_dump(exclude={"nonfinite"}) == here
    assert report.nonfinite is None  # header only: not scanned for NaN/Inf (--stats reads them)
    assert size > 32 << 20 and fetched <= 64 * 1024 and read < 1 << 20, (fetched, read, size)


def test_remote_archives_read_verify_and_diff_like_local_ones(big: tuple[str, Path]) -> None:
    url, local = big
    remote_archive = weightio.load(url, verify=True)
    for key, array in weightio.load(local).tensors.items():
        np.testing.assert_array_equal(remote_archive.tensors[key], array)
    assert weightio.diff(url, local).identical
    assert weightio.read(url).spec == weightio.load(local).spec


def test_convert_from_and_to_s3_is_the_local_conversion(s3: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torch.save({"model": module.state_dict(), "step": 1}, tmp_path / "step-1.pt")
    weightio.convert(tmp_path / "step-1.pt", tmp_path / "local.safetensors")
    import fsspec

    fsspec.filesystem("s3").put_file(str(tmp_path / "step-1.pt"), "weights/src/step-1.pt")
    result = weightio.convert("s3://weights/src/step-1.pt", "s3://weights/out/local.safetensors")
    assert result.destination == "s3://weights/out/local.safetensors"
    fetched = fsspec.filesystem("s3").cat_file("weights/out/local.safetensors")
    assert fetched == (tmp_path / "local.safetensors").read_bytes()  # bit-identical
    with pytest.raises(weightio.errors.TargetExistsError):
        weightio.convert("s3://weights/src/step-1.pt", "s3://weights/out/local.safetensors", overwrite=False)


def test_a_failing_store_is_a_typed_error(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceNotFoundError, match="no such object"):
        weightio.load("s3://weights/absent.safetensors")
    with pytest.raises(SourceNotFoundError):
        weightio.read("s3://no-such-bucket/m.pt")
    with pytest.raises(UnsupportedSourceError):
        weightio.load("file://elsewhere/m.safetensors")
    dead = _free_port()  # a port nobody listens on
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    with pytest.raises(StorageError, match="failed"):
        weightio.load("s3://weights/big.safetensors")
    fsspec.filesystem("s3").clear_instance_cache()


@pytest.mark.slow  # CLI processes on a cluster: the default set keeps the API path
def test_cli_inspect_and_batch_convert_between_buckets(big: tuple[str, Path], s3: str, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    torch = pytest.importorskip("torch")
    url, local = big
    done = subprocess.run([sys.executable, "-m", "weightio", "inspect", url, "--json"], capture_output=True,
                          text=True, timeout=300, env=_child_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_bytes"] == 32 << 20
    import fsspec

    fs = fsspec.filesystem("s3")
    for step in (1, 2, 3):
        torch.manual_seed(step)
        path = tmp_path / f"step-{step}.pt"
        torch.save({"model": torch.nn.Linear(4, 3).state_dict(), "step": step}, path)
        fs.put_file(str(path), f"weights/run/step-{step}.pt")
    fs.pipe_file("weights/run/step-4.pt", b"not a checkpoint")
    batch = subprocess.run(
        [sys.executable, "-m", "weightio", "batch", "convert", "s3://weights/run/*.pt", "--out",
         "s3://weights/archives", "--workers", "1", "--json"],
        capture_output=True, text=True, timeout=300, env=_child_env(), cwd=ROOT)
    assert batch.returncode == 1, batch.stderr
    shape = json.loads(batch.stdout)
    assert shape["counts"] == {"converted": 3, "skipped": 0, "failed": 1}
    assert sorted(fs.ls("weights/archives")) == [f"weights/archives/step-{s}.safetensors" for s in (1, 2, 3)]
    reference = tmp_path / "step-2.safetensors"
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        weightio.convert(tmp_path / "step-2.pt", reference)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert fs.cat_file("weights/archives/step-2.safetensors") == reference.read_bytes()
