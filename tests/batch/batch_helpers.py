"""Helpers of the batch tests: generated training checkpoints, a real Dask scheduler and workers
started as processes on 127.0.0.1 (ephemeral ports), and the one-at-a-time ``weightio convert``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A fixed creation time, so archives written at different moments are comparable byte for byte.
EPOCH = "1700000000"


def env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on the path, a fixed epoch."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "SOURCE_DATE_EPOCH": EPOCH,
            "PYTHONWARNINGS": "ignore", **extra}


def write_checkpoints(folder: Path, count: int, *, corrupt: tuple[int, ...] = (), width: int = 16,
                      seed: int = 0) -> list[Path]:
    """``count`` training checkpoints ``step-NNNNNN.pt`` ({"model": state dict, "step": n,
    "optimizer": …}) of one small MLP drifting step by step; the ``corrupt`` ones are damaged
    (one truncated, the next with garbage bytes, alternately).
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 4))
    paths = []
    for index in range(count):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        path = folder / f"step-{(index + 1) * 100:06d}.pt"
        torch.save({"model": model.state_dict(), "step": (index + 1) * 100,
                    "optimizer": {"lr": 0.1}}, path)
        paths.append(path)
    for n, index in enumerate(corrupt):
        data = paths[index].read_bytes()
        paths[index].write_bytes(data[: len(data) // 2] if n % 2 == 0 else b"not a checkpoint" * 8)
    return paths


def cli(*args: str, timeout: float = 300, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m weightio ARGS`` of this checkout, with the fixed epoch."""
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(**(extra_env or {})), cwd=ROOT)


def one_at_a_time(source: Path, destination: Path) -> bytes:
    """The archive ``weightio convert SOURCE DESTINATION`` writes (the reference of every batch)."""
    done = cli("convert", str(source), str(destination))
    assert done.returncode == 0, done.stderr
    return destination.read_bytes()


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".weightio-tmp-" in p.name]


@dataclass
class Cluster:
    """A ``dask scheduler`` and its ``dask worker`` processes, each in its own process group."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path | None = None

    def kill_worker(self, index: int) -> None:
        """SIGKILL the worker's whole process group (its nanny and the worker process)."""
        process = self.workers[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _dask(*args: str) -> list[str]:
    """The ``dask`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("dask")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


def _wait_for(path: Path, pattern: str, timeout: float, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"no {pattern!r} in {path} after {timeout} s:\n{text[-3000:]}")


@contextlib.contextmanager
def dask_cluster(logs: Path, workers: int = 2, *, worker_env: list[dict[str, str]] | None = None,
                 preload: list[str | None] | None = None) -> Iterator[Cluster]:
    """A real ``dask scheduler`` and ``workers`` × ``dask worker`` on 127.0.0.1, ephemeral ports.

    Every process is stopped (its process group) when the block ends, however it ends.
    """
    logs.mkdir(parents=True, exist_ok=True)
    scheduler_log = logs / "scheduler.log"
    with open(scheduler_log, "wb") as out:
        scheduler = subprocess.Popen(
            _dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                  "--no-show"), stdout=out, stderr=subprocess.STDOUT, env=env(),
            start_new_session=True, cwd=logs)
    cluster = Cluster(address="", scheduler=scheduler, logs=logs)
    try:
        cluster.address = _wait_for(scheduler_log, r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)",
                                    60, scheduler)
        for index in range(workers):
            extra = (worker_env or [{}] * workers)[index]
            args = ["worker", cluster.address, "--host", "127.0.0.1", "--nthreads", "1",
                    "--nworkers", "1", "--no-dashboard", "--name", f"w{index}",
                    "--local-directory", str(logs / f"w{index}")]
            module = (preload or [None] * workers)[index]
            if module:
                args += ["--preload", module]
            log = logs / f"worker-{index}.log"
            with open(log, "wb") as out:
                cluster.workers.append(subprocess.Popen(
                    _dask(*args), stdout=out, stderr=subprocess.STDOUT, env=env(**extra),
                    start_new_session=True, cwd=logs))
        for index, process in enumerate(cluster.workers):
            _wait_for(logs / f"worker-{index}.log", r"(Registered to|Starting established connection)",
                      90, process)
        yield cluster
    finally:
        cluster.stop()
