"""Whole-process benchmarks of the weightio verbs a user types, each against its floor, in one run.

Usage (from the repository root; the default is the full run that docs/performance.md quotes)::

    python benchmarks/bench_files.py [--size-mib 1024] [--repeats 3] [--workdir DIR]
                                     [--only pt,keras,diff,inspect,verify,shard,big] [--big-gib 10]
                                     [--no-hand] [--json results.json]

What is measured. Every job is the CLI verb itself (``python -m weightio VERB ...``), run as its
own process, *interleaved* with its floor: each round runs the floor command(s) and then the
job(s), ``--repeats`` rounds after one warm-up round that is discarded, and the table gives
medians of the rounds with ratios of those medians. The floors:

- ``cp`` and ``cp + sync`` (``cp SRC DST && sync DST``) of the job's input, for jobs that write:
  a weightio write is durable (temp file, fsync, rename), so ``cp + sync`` is its floor;
- ``cat`` of the files read to ``/dev/null`` and one BLAKE3 pass over them, for jobs that read
  (diff, verify);
- ``weightio --help``, for start-up (inspect reads a header only).

Inputs, generated in ``--workdir`` (kept between runs; the 10 GiB pair is deleted after its rows):

- ``model.pt``: a transformer-like fp32 state dict of ``--size-mib`` (246 tensors, 1 KiB to
  64 MiB), written by ``torch.save``; ``model.safetensors`` its archive (``weightio convert``);
  ``same.safetensors`` a byte copy of it and ``changed.safetensors`` the same tensors with every
  value perturbed (``x + 1e-3 * noise``: every element differs, the worst case for diff);
- ``mlp.keras`` / ``mlp.weights.h5``: a Keras ``Sequential`` of ``Dense(2048)`` layers of about
  the same size (needs TensorFlow once, to make them);
- ``big-a.safetensors`` / ``big-b.safetensors``: two ``--big-gib`` archives of 64 MiB fp32
  tensors (``b``: every other tensor perturbed), written tensor by tensor (no 10 GiB in memory).

Columns: wall time (median), peak RSS (``/usr/bin/time`` maximum resident set: it counts the
mapped file pages the process touched), peak anonymous memory (``RssAnon`` sampled every 5 ms:
what the process allocated), and the ratio to the row's floor. The load average is printed with
each group: on a shared machine, compare ratios from one run, not times across runs.

Child processes run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` removed, caches in
``WORKDIR/pycache``), as an installed package would; ``PYTHONPATH`` is passed through, so
``PYTHONPATH=$PWD python benchmarks/bench_files.py`` measures the tree it is run from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PY = sys.executable
MiB = 1024 * 1024
JOBS = ("pt", "keras", "diff", "inspect", "verify", "shard", "big")


def child_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


@dataclass
class Result:
    group: str
    label: str
    command: str
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    anon: list[float] = field(default_factory=list)
    floor: str | None = None
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def peak_rss(self) -> float:
        return max(self.rss) if self.rss else float("nan")

    @property
    def peak_anon(self) -> float:
        return max(self.anon) if self.anon else float("nan")


def measure(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, float, float]:
    """Run ``cmd`` under ``/usr/bin/time``; return (wall s, peak RSS MiB, peak RssAnon MiB).

    ``/usr/bin/time`` is a small exec'd process, so the child's RSS high-water mark starts from
    nothing (``wait4`` from this Python process would inherit its RSS through the fork).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%e %M", "-o", report.name, *cmd],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
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
        wall = time.perf_counter() - start
        done.set()
        text = report.read().split()
    code = proc.returncode
    if code not in ok:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{err.decode()[-3000:]}")
    rss_kib = int(text[-1]) if text else 0
    return wall, rss_kib / 1024, peak_anon[0] / 1024


def load_average() -> str:
    return open("/proc/loadavg").read().split()[0]


class Runner:
    def __init__(self, work: Path, repeats: int) -> None:
        self.work = work
        self.repeats = repeats
        self.env = child_env(work)
        self.results: list[Result] = []
        self.loads: dict[str, list[str]] = {}

    def group(self, name: str, jobs: list[tuple[str, list[str], str | None, list[Path], tuple[int, ...]]]) -> None:
        """Run ``jobs`` interleaved: one warm-up round, then ``repeats`` rounds of all of them.

        Each job: (label, command, floor label or None, paths to delete before it, ok exit codes).
        """
        rows = {label: Result(name, label, " ".join(_short(c) for c in cmd), floor=floor)
                for label, cmd, floor, _, _ in jobs}
        loads = [load_average()]
        for round_ in range(self.repeats + 1):
            for label, cmd, _, cleanup, ok in jobs:
                for path in cleanup:
                    if path.is_dir():  # a folder is emptied (the job writes into it)
                        shutil.rmtree(path)
                        path.mkdir()
                    elif path.exists():
                        path.unlink()
                wall, rss, anon = measure(cmd, self.env, ok)
                if round_:
                    rows[label].walls.append(wall)
                    rows[label].rss.append(rss)
                    rows[label].anon.append(anon)
            loads.append(load_average())
        self.loads[name] = loads
        self.results.extend(rows.values())
        print(f"[{name}] load average per round: {' '.join(loads)}", flush=True)
        for row in rows.values():
            print(f"  {row.label}: {row.wall:.2f} s, {row.peak_rss:.0f} MiB RSS, {row.peak_anon:.0f} MiB anon",
                  flush=True)

    def get(self, label: str) -> Result:
        return next(r for r in self.results if r.label == label)


def _short(part: str) -> str:
    return part if len(part) < 60 else part[:24] + "…" + part[-24:]


# -- inputs -----------------------------------------------------------------------------------


def make_checkpoint(path: Path, size_mib: int) -> tuple[int, int]:
    """A transformer-like state dict: 24 blocks of 10 tensors, embeddings, norms; 246 tensors."""
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


MAKE_CHANGED = """
import sys, numpy as np, weightio
a = weightio.load(sys.argv[1])
rng = np.random.default_rng(1)
arrays = {k: (np.asarray(a.tensors[k]) + np.float32(1e-3) * rng.standard_normal(a.tensors[k].shape, dtype=np.float32)).astype(a.tensors[k].dtype) for k in a.tensors}
weightio.save(weightio.read(arrays), sys.argv[2])
"""

MAKE_BIG = """
# A weightio archive written tensor by tensor, as weightio lays it out (placeholder digests in the
# header, tensors generated, hashed and written one at a time, the real header written last), so
# that making 10 GiB holds one 64 MiB tensor in memory. `weightio verify` checks it afterwards.
import json, sys, blake3, numpy as np
from weightio.format.archive import archive_metadata, spec_with_digests
from weightio.format.provenance import provenance
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec
from weightio.spec.tensors import TensorRef
path, gib, perturbed = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
n, elements = gib * 16, 16 * 1024 * 1024  # 64 MiB float32 tensors
names = [f"t.t{i:04d}" for i in range(n)]
refs = {name[2:]: TensorRef(key=name, shape=(elements,), dtype="F32") for name in names}
spec = ModelSpec(name="big", weights_only=True, layers=[OpaqueLayer(name="t", tensors=refs)],
                 provenance=provenance("unknown", framework_version=None, source_class=None))
def header(digests):
    layout = {"__metadata__": archive_metadata(spec_with_digests(spec, digests))}
    for i, name in enumerate(names):
        layout[name] = {"dtype": "F32", "shape": [elements], "data_offsets": [i * elements * 4, (i + 1) * elements * 4]}
    body = json.dumps(layout, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return len(body).to_bytes(8, "little") + body
first = header({name: "blake3:" + "0" * 64 for name in names})
digests = {}
with open(path, "wb") as f:
    f.write(first)
    for i, name in enumerate(names):
        x = np.random.default_rng(i).standard_normal(elements, dtype=np.float32)
        if perturbed and i % 2:
            x += np.float32(1e-3)
        digests[name] = "blake3:" + blake3.blake3(x.view(np.uint8)).hexdigest()
        f.write(x.tobytes())
    final = header(digests)
    assert len(final) == len(first)
    f.seek(0)
    f.write(final)
"""

MAKE_KERAS = """
import sys, keras
d = 2048
n = max(1, int(sys.argv[2]) * 1024 * 1024 // (d * d * 4))
layers = [keras.Input((d,))] + [keras.layers.Dense(d, name=f"fc{i}") for i in range(n)]
m = keras.Sequential(layers, name="mlp")
m.save(sys.argv[1] + "/mlp.keras")
m.save_weights(sys.argv[1] + "/mlp.weights.h5")
"""

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

HANDWRITTEN_DIFF = """
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
for k in a:
    x, y = a[k].astype(np.float64), b[k].astype(np.float64)
    d = y - x
    print(k, np.abs(d).max(), np.linalg.norm(d) / np.linalg.norm(x), x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y))
"""

BLAKE3_PASS = """
import sys, blake3
for path in sys.argv[1:]:
    blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest()
"""


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    parser.add_argument("--big-gib", type=int, default=10, help="size of each archive of the 'big' pair")
    parser.add_argument("--no-hand", action="store_true", help="skip the hand-written peers (torch, TensorFlow)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args()
    jobs = set(args.only.split(","))
    unknown = jobs - set(JOBS)
    if unknown:
        raise SystemExit(f"unknown jobs {sorted(unknown)}; choose from {JOBS}")
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="weightio-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run = Runner(work, args.repeats)
    env = run.env
    wio = [PY, "-m", "weightio"]
    print(f"workdir {work}; {os.cpu_count()} cores; load average {load_average()}; python {sys.version.split()[0]}")

    pt = work / "model.pt"
    facts = work / f"model-{args.size_mib}.json"
    if not pt.exists() or not facts.exists():
        print("making model.pt ...", flush=True)
        count, largest = make_checkpoint(pt, args.size_mib)
        facts.write_text(json.dumps([count, largest]))
    count, largest = json.loads(facts.read_text())
    archive = work / "model.safetensors"
    if not archive.exists():
        subprocess.run([*wio, "convert", str(pt), str(archive)], check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"checkpoint: {pt.stat().st_size / MiB:.0f} MiB, {count} tensors, largest {largest / MiB:.0f} MiB")
    copy = work / "copy.bin"
    out = work / "out.safetensors"

    def cp(src: Path) -> list[str]:
        return ["cp", str(src), str(copy)]

    def cp_sync(src: Path) -> list[str]:
        return ["sh", "-c", f"cp '{src}' '{copy}' && sync '{copy}'"]

    if "pt" in jobs:
        group = [
            ("cp model.pt", cp(pt), None, [copy], (0,)),
            ("cp + sync model.pt", cp_sync(pt), None, [copy], (0,)),
            ("weightio convert model.pt out.safetensors", [*wio, "convert", str(pt), str(out)],
             "cp + sync model.pt", [out], (0,)),
        ]
        if not args.no_hand:
            group.append(("hand-written torch.load + save_file", [PY, "-c", HANDWRITTEN_PT, str(pt), str(out)],
                          "cp + sync model.pt", [out], (0,)))
        run.group("pt -> archive", group)
    if "shard" in jobs:
        shard = pt.stat().st_size // 4 + largest  # greedy packing in order: 4 shards
        shards = work / "shards"
        shards.mkdir(exist_ok=True)
        run.group("pt -> 4 shards", [
            ("cp + sync model.pt (shards)", cp_sync(pt), None, [copy], (0,)),
            (f"weightio convert model.pt shards/model.safetensors --max-shard-size {shard}",
             [*wio, "convert", str(pt), str(shards / "model.safetensors"), "--max-shard-size", str(shard)],
             "cp + sync model.pt (shards)", [shards], (0,)),
        ])
        print(f"  shards written: {sorted(p.name for p in shards.iterdir())}")
    if "keras" in jobs:
        keras_file, weights_file = work / "mlp.keras", work / "mlp.weights.h5"
        if not keras_file.exists() or not weights_file.exists():
            print("making mlp.keras with Keras ...", flush=True)
            subprocess.run([PY, "-c", MAKE_KERAS, str(work), str(args.size_mib)], check=True,
                           capture_output=True, env=env)
        group = [
            ("cp mlp.keras", cp(keras_file), None, [copy], (0,)),
            ("cp + sync mlp.keras", cp_sync(keras_file), None, [copy], (0,)),
            ("weightio convert mlp.keras out.safetensors --no-verify (torch state dict, no TF)",
             [*wio, "convert", str(keras_file), str(out), "--no-verify"], "cp mlp.keras", [out], (0,)),
            ("weightio convert mlp.weights.h5 --architecture mlp.keras --no-verify",
             [*wio, "convert", str(weights_file), str(out), "--no-verify", "--architecture", str(keras_file)],
             "cp mlp.keras", [out], (0,)),
        ]
        if not args.no_hand:
            group.append(("hand-written keras load_model + transpose + torch.save",
                          [PY, "-c", HANDWRITTEN_KERAS, str(keras_file), str(work / "hand.pt")],
                          "cp mlp.keras", [work / "hand.pt"], (0,)))
        run.group("keras -> state dict", group)
    same, changed = work / "same.safetensors", work / "changed.safetensors"
    if "diff" in jobs:
        if not same.exists():
            shutil.copy(archive, same)
        if not changed.exists():
            subprocess.run([PY, "-c", MAKE_CHANGED, str(archive), str(changed)], check=True, env=env)
        group = [
            ("cat both files > /dev/null", ["sh", "-c", f"cat '{archive}' '{changed}' > /dev/null"], None, [], (0,)),
            ("blake3 of both files (one pass)", [PY, "-c", BLAKE3_PASS, str(archive), str(changed)], None, [], (0,)),
            ("weightio diff model same (identical bytes)", [*wio, "diff", str(archive), str(same)],
             "cat both files > /dev/null", [], (0,)),
            ("weightio diff model changed (every value differs)", [*wio, "diff", str(archive), str(changed)],
             "cat both files > /dev/null", [], (1,)),
        ]
        if not args.no_hand:
            group.append(("hand-written: load both whole, numpy per tensor",
                          [PY, "-c", HANDWRITTEN_DIFF, str(archive), str(changed)],
                          "cat both files > /dev/null", [], (0,)))
        run.group("diff", group)
    if "verify" in jobs:
        run.group("verify", [
            ("cat model.safetensors > /dev/null", ["sh", "-c", f"cat '{archive}' > /dev/null"], None, [], (0,)),
            ("blake3 of model.safetensors (one pass)", [PY, "-c", BLAKE3_PASS, str(archive)], None, [], (0,)),
            ("weightio verify model.safetensors", [*wio, "verify", str(archive)],
             "blake3 of model.safetensors (one pass)", [], (0,)),
        ])
    if "inspect" in jobs:
        run.group("inspect", [
            ("weightio --help", [*wio, "--help"], None, [], (0,)),
            ("weightio inspect model.safetensors (header only)", [*wio, "inspect", str(archive)],
             "weightio --help", [], (0,)),
        ])
    if "big" in jobs:
        big_a, big_b = work / "big-a.safetensors", work / "big-b.safetensors"
        free = shutil.disk_usage(work).free
        if free < (2 * args.big_gib + 4) * 1024 * MiB:
            print(f"skipping 'big': {free / 1024 / MiB:.0f} GiB free, need {2 * args.big_gib + 4}")
        else:
            try:
                print(f"making two {args.big_gib} GiB archives ...", flush=True)
                for path, perturbed in ((big_a, "0"), (big_b, "1")):
                    subprocess.run([PY, "-c", MAKE_BIG, str(path), str(args.big_gib), perturbed], check=True, env=env)
                run.group(f"{args.big_gib} GiB pair", [
                    ("cat both big files > /dev/null", ["sh", "-c", f"cat '{big_a}' '{big_b}' > /dev/null"],
                     None, [], (0,)),
                    (f"weightio diff big-a big-b ({args.big_gib} GiB each, half the tensors changed)",
                     [*wio, "diff", str(big_a), str(big_b)], "cat both big files > /dev/null", [], (1,)),
                    (f"weightio verify big-a ({args.big_gib} GiB)", [*wio, "verify", str(big_a)],
                     "cat both big files > /dev/null", [], (0,)),
                ])
            finally:
                for path in (big_a, big_b):
                    if path.exists():
                        path.unlink()
    copy.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    report(run, args, count, largest, pt.stat().st_size, archive.stat().st_size)


def report(run: Runner, args: argparse.Namespace, count: int, largest: int, pt_size: int, archive_size: int) -> None:
    print()
    print(f"Command: python benchmarks/bench_files.py --size-mib {args.size_mib} --repeats {args.repeats}"
          + (f" --only {args.only}" if args.only != ",".join(JOBS) else "")
          + (f" --big-gib {args.big_gib}" if args.big_gib != 10 else ""))
    print("Load average (start of each group, then after each round): "
          + "; ".join(f"{g}: {' '.join(v)}" for g, v in run.loads.items()))
    print()
    print(f"| group | job | wall s (median of {args.repeats}) | peak RSS MiB | peak anon MiB | ratio to floor |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in run.results:
        ratio = ""
        if r.floor is not None:
            ratio = f"{r.wall / run.get(r.floor).wall:.2f}x {r.floor}"
        print(f"| {r.group} | {r.label} | {r.wall:.2f} | {r.peak_rss:.0f} | {r.peak_anon:.0f} | {ratio} |")
    print()
    print("Must-show checks (ratios of medians from this run):")
    labels = {r.label for r in run.results}

    def check(name: str, ok: bool, detail: str) -> None:
        print(f"- [{'x' if ok else ' '}] {name}: {detail}")

    convert = "weightio convert model.pt out.safetensors"
    if convert in labels:
        c, floor = run.get(convert), run.get("cp + sync model.pt")
        check(".pt -> archive <= 1.5x cp + sync", c.wall <= 1.5 * floor.wall, f"{c.wall / floor.wall:.2f}x")
        limit = 1.5 * largest / MiB + 300
        check(".pt -> archive peak RSS <= 1.5x largest tensor + 300 MB", c.peak_rss <= limit,
              f"{c.peak_rss:.0f} MiB against {limit:.0f} MiB")
        if "hand-written torch.load + save_file" in labels:
            h = run.get("hand-written torch.load + save_file")
            check(".pt -> archive <= 0.6x hand-written", c.wall <= 0.6 * h.wall, f"{c.wall / h.wall:.2f}x")
    keras = "weightio convert mlp.keras out.safetensors --no-verify (torch state dict, no TF)"
    if keras in labels:
        k, floor = run.get(keras), run.get("cp mlp.keras")
        check(".keras -> state dict <= 6x cp", k.wall <= 6 * floor.wall, f"{k.wall / floor.wall:.2f}x")
        if "hand-written keras load_model + transpose + torch.save" in labels:
            h = run.get("hand-written keras load_model + transpose + torch.save")
            check(".keras -> state dict >= 6x faster than through Keras", h.wall >= 6 * k.wall,
                  f"{h.wall / k.wall:.1f}x faster")
    for label in ("weightio diff model same (identical bytes)", "weightio diff model changed (every value differs)"):
        if label in labels:
            d = run.get(label)
            rate = 2 * archive_size / d.wall / 1e9
            check(f"{label}: >= 2 GB/s of both files", rate >= 2, f"{rate:.2f} GB/s")
            check(f"{label}: peak RSS < 300 MB", d.peak_rss * MiB < 300e6, f"{d.peak_rss:.0f} MiB")
    big = [r for r in run.results if r.label.startswith("weightio diff big-a")]
    small = [run.get(label) for label in ("weightio diff model changed (every value differs)",) if label in labels]
    if big and small:
        check(f"{args.big_gib} GiB pair uses no more memory than the 1 GiB pair",
              big[0].peak_rss <= small[0].peak_rss * 1.05 + 8,
              f"{big[0].peak_rss:.0f} MiB against {small[0].peak_rss:.0f} MiB")
    if "weightio inspect model.safetensors (header only)" in labels:
        i, h = run.get("weightio inspect model.safetensors (header only)"), run.get("weightio --help")
        check("inspect <= 0.3 s, or within 3x --help", i.wall <= 0.3 or i.wall <= 3 * h.wall,
              f"{i.wall:.2f} s, {i.wall / h.wall:.2f}x --help")
    if args.json is not None:
        args.json.write_text(json.dumps({"loads": run.loads, "results": [asdict(r) for r in run.results]}, indent=1))


if __name__ == "__main__":
    main()
