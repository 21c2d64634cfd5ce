"""Whole-process benchmarks of weightio's file paths against hand-written code and ``cp``.

Usage::

    python benchmarks/bench_files.py [--size-mib 1024] [--repeats 3] [--workdir DIR] [--only a,b,c,d,e]

Builds a transformer-like fp32 checkpoint (245 tensors, ~1 KiB to 64 MiB) and a Keras MLP of the
same size, then runs each job as its own process, after one warm-up run, ``--repeats`` times, and
prints the median wall time, peak RSS (``wait4`` rusage, which counts mapped file pages a process
touched) and peak anonymous memory (``RssAnon`` sampled from ``/proc`` every 5 ms, i.e. what the
process allocated). Every job is compared with ``cp`` of the same input in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PY = sys.executable
MiB = 1024 * 1024


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd`` under ``/usr/bin/time``; return (wall s, peak RSS MiB, peak RssAnon MiB).

    ``/usr/bin/time`` is a small exec'd process, so the child's RSS high-water mark starts from
    nothing (``wait4`` from this Python process would inherit its RSS through the fork).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%e %M", "-o", report.name, *cmd],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        peak_anon = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as handle:
                        kids = handle.read().split()
                    for kid in kids:
                        with open(f"/proc/{kid}/status") as handle:
                            for line in handle:
                                if line.startswith("RssAnon:"):
                                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
                except OSError:
                    pass
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        done.set()
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
        wall, rss_kib = report.read().split()[-2:]
    return float(wall), int(rss_kib) / 1024, peak_anon[0] / 1024


def bench(cmd: list[str], repeats: int, cleanup: list[Path] = ()) -> tuple[float, float, float]:
    runs = []
    for i in range(repeats + 1):  # first run warms caches and is discarded
        for path in cleanup:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        result = measure(cmd)
        if i:
            runs.append(result)
    return tuple(statistics.median(r[k] for r in runs) for k in range(3))  # type: ignore[return-value]


# -- inputs -----------------------------------------------------------------------------------


def make_checkpoint(path: Path, size_mib: int) -> tuple[int, int]:
    """A transformer-like state dict: 24 blocks of 10 tensors, embeddings, norms; 245 tensors."""
    import torch

    embed_bytes = min(64 * MiB, size_mib * MiB // 16)
    d = max(64, int(math.sqrt(max(1, size_mib * MiB - embed_bytes) / (24 * 48)) // 32 * 32))
    vocab = max(1, embed_bytes // (4 * d))
    g = torch.Generator().manual_seed(0)
    state = {"embed.weight": torch.randn(vocab, d, generator=g)}
    for b in range(24):
        p = f"blocks.{b}."
        for name in ("q", "k", "v", "o"):
            state[p + f"attn.{name}.weight"] = torch.randn(d, d, generator=g)
        state[p + "mlp.fc1.weight"] = torch.randn(4 * d, d, generator=g)
        state[p + "mlp.fc2.weight"] = torch.randn(d, 4 * d, generator=g)
        for ln in ("ln1", "ln2"):
            state[p + f"{ln}.weight"] = torch.ones(d)
            state[p + f"{ln}.bias"] = torch.zeros(d)
    state["final_ln.weight"] = torch.ones(d)
    state["final_ln.bias"] = torch.zeros(d)
    state["rope.inv_freq"] = torch.randn(256, generator=g)  # 1 KiB
    state["lm_head.bias"] = torch.zeros(vocab)
    state["pos_scale"] = torch.ones(256)
    torch.save(state, path)
    largest = max(t.numel() * t.element_size() for t in state.values())
    return len(state), largest


def make_keras(folder: Path, size_mib: int) -> tuple[Path, Path, int]:
    """A Keras MLP of Dense(d, d) layers totalling about ``size_mib``: .keras and .weights.h5."""
    code = f"""
import numpy as np, keras
d = 2048
n = max(1, {size_mib} * 1024 * 1024 // (d * d * 4))
layers = [keras.Input((d,))] + [keras.layers.Dense(d, name=f"fc{{i}}") for i in range(n)]
m = keras.Sequential(layers, name="mlp")
m.save({str(folder / 'mlp.keras')!r})
m.save_weights({str(folder / 'mlp.weights.h5')!r})
print(n)
"""
    subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    return folder / "mlp.keras", folder / "mlp.weights.h5", 2048 * 2048 * 4


HANDWRITTEN_PT = """
import sys, torch
from safetensors.torch import save_file
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])
"""

HANDWRITTEN_KERAS = """
import sys, keras, torch
m = keras.saving.load_model(sys.argv[1], compile=False)
sd = {}
for layer in m.layers:
    w = layer.get_weights()
    if w:
        sd[layer.name + ".weight"] = torch.from_numpy(w[0].T.copy())
        sd[layer.name + ".bias"] = torch.from_numpy(w[1])
torch.save(sd, sys.argv[2])
"""

STREAM_DIFF = """
import sys, numpy as np, weightio
from weightio.streaming import iter_chunks
a, b = weightio.load(sys.argv[1]), weightio.load(sys.argv[2])
worst = 0.0
for key in a.tensors:
    for x, y in zip(iter_chunks(a.tensors[key]), iter_chunks(b.tensors[key])):
        worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))))
print(worst)
"""

WHOLE_DIFF = """
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
print(max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default="a,b,c,d,e")
    args = parser.parse_args()
    jobs = set(args.only.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="weightio-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    weightio_cli = [PY, "-m", "weightio"]
    rows: list[tuple[str, str, float, float, float, float]] = []
    floors: dict[str, float] = {}

    def row(group: str, label: str, cmd: list[str], floor: float, cleanup: list[Path] = ()) -> None:
        wall, rss, anon = bench(cmd, args.repeats, list(cleanup))
        rows.append((group, label, wall, rss, anon, wall / floor if floor else float("nan")))
        print(f"  {group} {label}: {wall:.2f} s, {rss:.0f} MiB RSS, {anon:.0f} MiB anon", flush=True)

    pt = work / "model.pt"
    facts = work / f"model-{args.size_mib}.json"
    if not pt.exists() or not facts.exists():
        count, largest = make_checkpoint(pt, args.size_mib)
        facts.write_text(json.dumps([count, largest]))
    count, largest = json.loads(facts.read_text())
    size = pt.stat().st_size
    print(f"checkpoint: {size / MiB:.0f} MiB, {count} tensors, largest {largest / MiB:.0f} MiB")

    def cp_floor(src: Path) -> float:
        dst = work / ("copy" + src.suffix)
        wall, rss, anon = bench(["cp", str(src), str(dst)], args.repeats, [dst])
        rows.append(("floor", f"cp {src.name}", wall, rss, anon, 1.0))
        sync_wall, rss2, anon2 = bench(
            ["sh", "-c", f"cp {src} {dst} && sync {dst}"], args.repeats, [dst]
        )
        rows.append(("floor", f"cp + sync {src.name}", sync_wall, rss2, anon2, sync_wall / wall))
        floors["sync"] = sync_wall
        print(f"  cp {src.name}: {wall:.2f} s; with sync {sync_wall:.2f} s", flush=True)
        return wall

    def hash_floor(src: Path, floor: float) -> None:
        """An archive records the sha256 of every tensor and of the source file: two passes."""
        # hashlib (OpenSSL, SHA extensions) rather than coreutils sha256sum, which may not use them
        code = "import hashlib,sys; hashlib.file_digest(open(sys.argv[1],'rb'),'sha256')"
        wall, rss, anon = bench([PY, "-S", "-c", code, str(src)], args.repeats)
        rows.append(("floor", f"sha256 of {src.name} (one of the two hash passes)", wall, rss,
                     anon, wall / floor))
        print(f"  sha256 of {src.name}: {wall:.2f} s", flush=True)

    floor = cp_floor(pt)
    pt_sync = floors["sync"]
    if "a" in jobs:
        hash_floor(pt, floor)
    archive = work / "model.safetensors"
    if "a" in jobs:
        row("a", "weightio convert .pt -> archive (no torch import)",
            weightio_cli + ["convert", str(pt), str(archive)], floor, [archive])
        row("a", "hand-written torch.load + save_file",
            [PY, "-c", HANDWRITTEN_PT, str(pt), str(work / "hand.safetensors")], floor,
            [work / "hand.safetensors"])
    if not archive.exists():
        subprocess.run(weightio_cli + ["convert", str(pt), str(archive)], check=True)
    if "b" in jobs:
        keras_file, weights_file, _ = make_keras(work, args.size_mib)
        kfloor = cp_floor(keras_file)
        out = work / "mlp.safetensors"
        row("b", "weightio convert .keras -> torch state dict (no TF)",
            weightio_cli + ["convert", str(keras_file), str(out), "--no-verify"], kfloor, [out])
        row("b", "weightio convert .weights.h5 -> torch state dict (no TF)",
            weightio_cli + ["convert", str(weights_file), str(out), "--no-verify",
                            "--architecture", str(keras_file)], kfloor, [out])
        row("b", "hand-written keras load_model + transpose + torch.save",
            [PY, "-c", HANDWRITTEN_KERAS, str(keras_file), str(work / "hand.pt")], kfloor,
            [work / "hand.pt"])
    if "c" in jobs:
        other = work / "other.safetensors"
        if not other.exists():
            shutil.copy(archive, other)
        afloor = cp_floor(archive)
        row("c", "streamed chunked compare (weightio.streaming.iter_chunks)",
            [PY, "-c", STREAM_DIFF, str(archive), str(other)], afloor)
        row("c", "hand-written: load both whole, numpy per tensor",
            [PY, "-c", WHOLE_DIFF, str(archive), str(other)], afloor)
    if "d" in jobs:
        row("d", "weightio inspect archive", weightio_cli + ["inspect", str(archive)], floor)
    if "e" in jobs:
        row("e", "weightio --help", weightio_cli + ["--help"], floor)

    print()
    print(f"| job | command | wall s (median of {args.repeats}) | peak RSS MiB | peak anon MiB "
          f"| x cp | x cp+sync ({pt.name}) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for group, label, wall, rss, anon, ratio in rows:
        same_input = group in ("a", "d", "e") or pt.name in label  # the others copy other files
        durable = f"{wall / pt_sync:.2f}" if same_input else ""
        print(f"| {group} | {label} | {wall:.2f} | {rss:.0f} | {anon:.0f} | {ratio:.2f} "
              f"| {durable} |")
    limit = 1.5 * largest / MiB + 300
    print(f"\nRSS limit for (a): 1.5 x largest tensor ({largest / MiB:.0f} MiB) + 300 = {limit:.0f} MiB")


if __name__ == "__main__":
    main()
