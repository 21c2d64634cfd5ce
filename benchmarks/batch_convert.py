"""Batch conversion on a 2-worker LocalCluster against a shell loop of ``weightio convert``, and
``inspect`` of an archive on a local S3 server (bytes fetched against the file's size).

Usage (from the repository root; the default is the full run that docs/scale.md quotes)::

    PYTHONPATH=$PWD python benchmarks/batch_convert.py [--count 16] [--size-mib 256]
                                                       [--workers 2] [--workdir DIR] [--json FILE]

What is measured:

1. ``--count`` training checkpoints (``torch.save({"model": state_dict, "step": n})``) of
   ``--size-mib`` each (fp32 tensors of 1-16 MiB), made once in ``--workdir``.
2. **Shell loop**: ``for f in run/*.pt; do weightio convert "$f" loop/$(basename "$f" .pt).safetensors; done``,
   one process per file, as a user would script it.
3. **Batch**: ``weightio batch convert run --out batch --workers 2`` (a LocalCluster of 2 worker
   processes, started and stopped inside the timed command).
   Both are whole commands, wall time from start to exit, with ``SOURCE_DATE_EPOCH`` set so that
   the two outputs are compared byte for byte (the script checks they are identical).
4. **Remote inspect**: one archive uploaded to a moto S3 server on 127.0.0.1, then
   ``weightio inspect s3://…`` in a child process; bytes fetched as weightio counts them
   (``weightio.format.remote.traffic``), and what the process read from sockets and files
   (``rchar`` of ``/proc/PID/io``, which also counts Python's own imports).

The machine is shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

EPOCH = "1700000000"


def _env() -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONWARNINGS": "ignore"}


def make_run(folder: Path, count: int, size_mib: int) -> list[Path]:
    import numpy as np
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"step-{(i + 1) * 1000:06d}.pt" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    rng = np.random.default_rng(0)
    sizes = [1, 2, 4, 8, 16]
    for index, path in enumerate(paths):
        state, total, n = {}, 0, 0
        while total < size_mib << 20:
            mib = min(sizes[n % len(sizes)], size_mib - (total >> 20))
            state[f"block{n}.weight"] = torch.from_numpy(
                rng.standard_normal(((mib << 20) // 4 // 1024, 1024), dtype=np.float32))
            total += mib << 20
            n += 1
        torch.save({"model": state, "step": (index + 1) * 1000}, path)
    return paths


def timed(command: list[str] | str, **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=_env(), stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def remote_inspect(workdir: Path, archive: Path) -> dict[str, object]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        env = {**_env(), "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        code = f"""
import fsspec
fs = fsspec.filesystem("s3"); fs.mkdir("bench"); fs.put_file({str(archive)!r}, "bench/{archive.name}")
"""
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        probe = f"""
import json, time
from pathlib import Path
from weightio.analysis.inspect import inspect_archive
from weightio.format import remote
from weightio.format.single import open_archive_file
def rchar():
    return int(next(l for l in Path("/proc/self/io").read_text().splitlines() if l.startswith("rchar")).split()[1])
import s3fs  # imports paid before the measurement
r0, t0 = rchar(), time.perf_counter()
report = inspect_archive(open_archive_file("s3://bench/{archive.name}"))
print(json.dumps({{"seconds": time.perf_counter() - t0, "fetched": remote.traffic().bytes,
                  "requests": remote.traffic().requests, "rchar": rchar() - r0,
                  "parameters": report.parameter_count}}))
"""
        done = subprocess.run([sys.executable, "-c", probe], check=True, env=env, capture_output=True, text=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        cli = subprocess.run([sys.executable, "-m", "weightio", "inspect", f"s3://bench/{archive.name}"],
                             env=env, capture_output=True, text=True)
        measured["cli_ok"] = cli.returncode == 0
        measured["file_size"] = archive.stat().st_size
        return measured
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/weightio-batch-bench"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = args.workdir
    sources = make_run(work / f"run-{args.count}x{args.size_mib}", args.count, args.size_mib)
    total = sum(p.stat().st_size for p in sources)
    results: dict[str, object] = {"count": args.count, "size_mib": args.size_mib, "workers": args.workers,
                                  "source_bytes": total, "load_average": os.getloadavg()}
    for name in ("loop", "batch"):
        shutil.rmtree(work / name, ignore_errors=True)
        (work / name).mkdir()
    weightio = f"{sys.executable} -m weightio"
    loop = (f'for f in {sources[0].parent}/*.pt; do {weightio} convert "$f" '
            f'{work / "loop"}/$(basename "$f" .pt).safetensors || exit 1; done')
    results["loop_seconds"] = timed(loop, shell=True, executable="/bin/bash")
    results["batch_seconds"] = timed([sys.executable, "-m", "weightio", "batch", "convert", str(sources[0].parent),
                                      "--out", str(work / "batch"), "--workers", str(args.workers),
                                      "--no-resume", "--json"])
    same = all((work / "loop" / f.name).read_bytes() == (work / "batch" / f.name).read_bytes()
               for f in (work / "loop").iterdir())
    results["identical_outputs"] = same and len(list((work / "batch").iterdir())) == args.count
    for name in ("loop", "batch"):
        results[f"{name}_mib_per_second"] = total / (1 << 20) / results[f"{name}_seconds"]  # type: ignore[operator]
    results["remote_inspect"] = remote_inspect(work, next((work / "batch").iterdir()))
    results["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
