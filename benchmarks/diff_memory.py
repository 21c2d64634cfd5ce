"""Benchmark: `weightio diff` / `inspect --stats` on two big archives vs the hand-written way.

Builds two weightio archives of SIZE_MIB each (float32 tensors of 64 MiB, one nudged), then runs,
each in a fresh process, measuring wall time and peak RSS (ru_maxrss of the child):

- ``weightio diff A B --json``            (streamed: chunked float64 accumulators, mmap'd tensors)
- ``weightio inspect A --stats --json``
- the peer a user writes by hand: load every tensor of both files into memory
  (``safetensors.numpy.load_file``), then numpy per tensor (max |Δ|, ‖Δ‖/‖A‖, cosine).

Peak RSS counts the memory-mapped file pages the streamed reader touches (see PERFORMANCE.md), so
it overstates what it allocates; the hand-written peer holds both files in anonymous memory.

    python benchmarks/diff_memory.py [SIZE_MIB=1024] [REPEATS=3]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEER = """
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
for k in a:
    x, y = a[k].astype(np.float64), b[k].astype(np.float64)
    d = y - x
    print(k, np.abs(d).max(), np.linalg.norm(d) / np.linalg.norm(x), x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y))
"""


def build(folder: Path, size_mib: int) -> tuple[Path, Path]:
    import weightio

    rng = np.random.default_rng(0)
    elements = 64 * 1024 * 1024 // 4
    arrays = {f"t{i:02d}.weight": rng.standard_normal(elements, dtype=np.float32) for i in range(max(1, size_mib // 64))}
    a = weightio.read(arrays)
    weightio.save(a, folder / "a.safetensors")
    arrays["t00.weight"] = arrays["t00.weight"] + np.float32(1e-3)
    weightio.save(weightio.read(arrays), folder / "b.safetensors")
    return folder / "a.safetensors", folder / "b.safetensors"


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status not in (0, 256):  # diff exits 1 when the files differ
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        # Built in a child process: a forked child's peak RSS would include this process's.
        subprocess.run([sys.executable, __file__, "--build", tmp, str(size)], check=True)
        a, b = Path(tmp) / "a.safetensors", Path(tmp) / "b.safetensors"
        py = sys.executable
        jobs = {
            "cp A (floor)": ["cp", str(a), str(Path(tmp) / "copy")],
            "weightio diff A B --json": [py, "-m", "weightio", "diff", str(a), str(b), "--json"],
            "weightio inspect A --stats --json": [py, "-m", "weightio", "inspect", str(a), "--stats", "--json"],
            "by hand: load both, numpy per tensor": [py, "-c", PEER, str(a), str(b)],
        }
        print(f"two archives of {size} MiB each (float32), median of {repeats}\n")
        print("| job | wall s | peak RSS MiB |\n| --- | --- | --- |")
        for name, cmd in jobs.items():
            runs = [measure(cmd) for _ in range(repeats)]
            wall = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            print(f"| {name} | {wall:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
