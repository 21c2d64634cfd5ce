"""Whole-process latency of small jobs: a 49-parameter Keras model converted by the CLI.

The issue's figures (a loaded machine): 16.6 s to .pt2, 5.4 s to .safetensors, 0.97 s with
--no-verify. The goal is under 4 s to .pt2. A small job's time is imports: TensorFlow (to run
the source, the witness), torch and torch.export's dynamo (to build and export the target). So
the table has those imports alone, measured in the same run, as the floor every row stands on.

    python benchmarks/small_model_latency.py [--repeats 5]

Prints medians (and min/max) in seconds; the machine is shared, so compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "KERAS_BACKEND": "tensorflow"}
    work = Path(tempfile.mkdtemp(prefix="weightio-latency-"))
    model = work / "small.keras"
    subprocess.run([PY, "-c", (
        "import keras; m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation='relu'),"
        f" keras.layers.Dense(1)]); assert m.count_params() == 49; m.save({str(model)!r})"
    )], env=env, check=True, capture_output=True)
    rows = [
        ("python -c pass", [PY, "-c", "pass"]),
        ("weightio --help", [PY, "-m", "weightio", "--help"]),
        ("import keras (TensorFlow)", [PY, "-c", "import keras"]),
        ("import torch + torch.export", [PY, "-c", "import torch, torch.export._trace"]),
        ("convert -> .pt2 --no-verify", [PY, "-m", "weightio", "convert", str(model), str(work / "a.pt2"), "--no-verify"]),
        ("convert -> .safetensors", [PY, "-m", "weightio", "convert", str(model), str(work / "a.safetensors")]),
        ("convert -> .pt2 (verified)", [PY, "-m", "weightio", "convert", str(model), str(work / "b.pt2")]),
    ]
    print(f"load average {os.getloadavg()[0]:.1f}; {args.repeats} runs each; seconds")
    print(f"{'job':34} {'median':>7} {'min':>7} {'max':>7}")
    for name, cmd in rows:
        times = [timed(cmd, env) for _ in range(args.repeats)]
        print(f"{name:34} {statistics.median(times):7.2f} {min(times):7.2f} {max(times):7.2f}")


if __name__ == "__main__":
    main()
