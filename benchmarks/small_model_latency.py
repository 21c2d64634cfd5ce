"""Whole-process latency of small jobs: a 49-parameter Keras model converted by the CLI.

The issue's figures (a loaded machine): 16.6 s to .pt2, 5.4 s to .safetensors, 0.97 s with
--no-verify. The goal is under 4 s to .pt2. A small job's time is imports: TensorFlow (to run
the source, the witness), torch and torch.export's dynamo (to build and export the target). So
the table has those imports alone, measured in the same run, as the floor every row stands on,
and every row's ratio to ``python -c "import tensorflow, torch"`` (both imports in one process).
One more floor is the witness's own: a fresh Python importing Keras as the witness does
(``import_keras_lean``), loading the file and calling it once; a verified conversion cannot end
before that (plus the start of the CLI that spawns it).

    python benchmarks/small_model_latency.py [--repeats 5] [--before DIR] [--jobs pt2] [--floors keras]

``--before DIR`` also runs the weightio rows from another source tree (``git archive REV | tar
-x -C DIR``), interleaved with this one's, so both see the same load. Prints medians (and
min/max) in seconds and CPU seconds; the machine is shared, so compare rows of one run.
Figures and what they mean: docs/performance.md (a verified .pt2 went from 1.32-1.38 to
1.03-1.08 times ``import tensorflow, torch`` with a core free: 9.12 s -> 7.44 s at load 1.2).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the process and every child it waited
    for (a witness process included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another weightio source tree, run interleaved")
    parser.add_argument("--jobs", default="", help="run only the weightio jobs whose name holds this")
    parser.add_argument("--floors", default="", help="run only the floors whose name holds this")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "KERAS_BACKEND": "tensorflow"}
    here = Path(__file__).resolve().parents[1]
    trees = {"now": here} if args.before is None else {"before": args.before.resolve(), "now": here}
    work = Path(tempfile.mkdtemp(prefix="weightio-latency-"))
    model = work / "small.keras"
    subprocess.run([PY, "-c", (
        "import keras; m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation='relu'),"
        f" keras.layers.Dense(1)]); assert m.count_params() == 49; m.save({str(model)!r})"
    )], env=env, check=True, capture_output=True)
    floors = [
        ("python -c pass", [PY, "-c", "pass"]),
        ("import keras (TensorFlow)", [PY, "-c", "import keras"]),
        ("import torch + torch.export", [PY, "-c", "import torch, torch.export._trace"]),
        ("import tensorflow, torch", [PY, "-c", "import tensorflow, torch"]),
        # the witness's floor: a fresh Python importing Keras as the witness does (without
        # matplotlib and scikit-learn), loading the file and calling it once
        ("keras lean import + load + call", [PY, "-c", (
            f"import sys, numpy as np; sys.path.insert(0, {str(here)!r})\n"
            "from weightio.frameworks.keras.witness import import_keras_lean\n"
            "import_keras_lean(); import keras\n"
            f"keras.saving.load_model({str(model)!r}, compile=False)(np.ones((8, 4), 'float32'))\n"
            "import os; os._exit(0)")]),
    ]
    jobs = [
        ("weightio --help", ["--help"]),
        ("convert -> .pt2 --no-verify", ["convert", str(model), "{out}.pt2", "--no-verify"]),
        ("convert -> .safetensors", ["convert", str(model), "{out}.safetensors"]),
        ("convert -> .pt2 (verified)", ["convert", str(model), "{out}.pt2"]),
    ]
    jobs = [(name, argv) for name, argv in jobs if args.jobs in name]
    floors = [(name, cmd) for name, cmd in floors
              if args.floors in name or name == "import tensorflow, torch"]
    loads = [os.getloadavg()[0]]
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # round robin: every row sees the same drift in load
        for name, cmd in floors:
            wall, cpu = timed(cmd, env)
            times.setdefault(name, []).append(wall)
            cpus.setdefault(name, []).append(cpu)
        for name, argv in jobs:
            for tree_name, tree in trees.items():
                out = str(work / f"{tree_name}-{len(times)}")
                tree_env = {**env, "PYTHONPATH": str(tree)}
                cmd = [PY, "-m", "weightio", *(a.replace("{out}", out) for a in argv)]
                wall, cpu = timed(cmd, tree_env)
                times.setdefault(f"{name} [{tree_name}]", []).append(wall)
                cpus.setdefault(f"{name} [{tree_name}]", []).append(cpu)
        loads.append(os.getloadavg()[0])
    both = statistics.median(times["import tensorflow, torch"])
    print(f"load average {' '.join(f'{x:.1f}' for x in loads)} (start, after each round); {args.repeats} runs each, round robin; seconds; "
          "ratio: median / median of `import tensorflow, torch`; cpu: median user+system seconds")
    print(f"{'job':44} {'median':>7} {'min':>7} {'max':>7} {'ratio':>6} {'cpu':>6}")
    for name, found in times.items():
        median = statistics.median(found)
        print(f"{name:44} {median:7.2f} {min(found):7.2f} {max(found):7.2f} {median / both:6.2f} "
              f"{statistics.median(cpus[name]):6.2f}")


if __name__ == "__main__":
    main()
