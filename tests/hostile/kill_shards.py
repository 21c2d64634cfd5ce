"""F8 driver: SIGKILL a sharded rewrite between (and during) shards; check what the index names.

``python kill_shards.py FOLDER OLD_SHARDS NEW_SHARDS RANDOM_KILLS SEED`` writes set A (OLD_SHARDS
shards) as FOLDER/model.safetensors.index.json, then repeatedly forks a child that rewrites it as
set B (NEW_SHARDS shards, different values) and dies:

- deterministically at the k-th ``"renamed"`` step of the write (``weightio.format.atomic.fault_hook``;
  one per shard, per index write and per shard taking its final name), for every k the write has;
- after a random delay spread over a whole write, RANDOM_KILLS times.

After each kill the parent checks the index on disk: every shard it names exists, and
``weightio.load(index, verify=True)`` gives exactly set A or exactly set B. It records that and the
leftover file names, restores A (a rewrite itself) and goes on. Prints JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np

import weightio.format.atomic
from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import load, save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance

TENSORS, ELEMENTS = 4, 60_000  # 240 kB each: one tensor per shard at 250 kB


def archive(seed: int) -> Archive:
    rng = np.random.default_rng(seed)
    arrays = {f"t{i}": rng.standard_normal(ELEMENTS).astype("f4") for i in range(TENSORS)}
    layer = OpaqueLayer(name="blob", tensors={k: tensor_ref(f"blob.{k}", a) for k, a in arrays.items()})
    spec = ModelSpec(name="blob", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="f8", created_at="now"))
    return Archive(spec, {f"blob.{k}": a for k, a in arrays.items()})


def shard_size(count: int) -> int:
    return (TENSORS // count) * ELEMENTS * 4 + 1000


def digests(spec) -> dict[str, str]:
    return {ref.key: ref.recorded_digest() for _, _, ref in spec.tensor_refs()}


def state(folder: Path, index: Path, a: dict, b: dict) -> dict:
    """What a reader of the set finds: the index if there is one, else the single file."""
    names = json.loads(index.read_text())["weight_map"].values() if index.exists() else []
    missing = sorted({n for n in names if not (folder / n).is_file()})
    try:
        got = digests(load(index if index.exists() else folder / "model.safetensors",
                           verify=True).spec)
        which = "old" if got == a else "new" if got == b else "mix"
    except Exception as exc:  # reported, and the test fails on it
        which = f"{type(exc).__name__}: {exc}"
    return {"set": which, "missing": missing, "named": sorted(set(names)),
            "files": sorted(p.name for p in folder.iterdir())}


def main() -> None:
    folder, old_n, new_n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    kills, seed = int(sys.argv[4]), int(sys.argv[5])
    path = folder / "model.safetensors"
    old, new = archive(1), archive(2)
    save(old, path, max_shard_size=shard_size(old_n))
    index = folder / "model.safetensors.index.json"
    a = digests(old.spec)
    save(new, folder / "b.safetensors", max_shard_size=shard_size(new_n))
    b = digests(new.spec)
    for p in folder.glob("b*"):
        p.unlink()
    for p in folder.glob("b-*"):
        p.unlink()

    def child(die) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                weightio.format.atomic.fault_hook = die
                save(new, path, max_shard_size=shard_size(new_n))
            finally:
                os._exit(0)
        return pid

    # The full write once, counting its steps and timing it.
    start = time.perf_counter()
    os.waitpid(child(None), 0)
    duration = time.perf_counter() - start
    steps: list[str] = []
    save(old, path, max_shard_size=shard_size(old_n))  # restore A, then count B's steps over it
    weightio.format.atomic.fault_hook = steps.append
    save(new, path, max_shard_size=shard_size(new_n))
    weightio.format.atomic.fault_hook = None
    renames = steps.count("renamed")
    save(old, path, max_shard_size=shard_size(old_n))

    results = []
    plan = [("renamed", k) for k in range(1, renames + 1)]
    rnd = random.Random(seed)
    plan += [("random", rnd.uniform(0.0, duration * 1.2)) for _ in range(kills)]
    for kind, at in plan:
        if kind == "renamed":
            count = [0]

            def die(point: str, k: int = at, count: list = count) -> None:
                if point == "renamed":
                    count[0] += 1
                    if count[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)

            pid = child(die)
            _, status = os.waitpid(pid, 0)
        else:
            pid = child(None)
            time.sleep(at)
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        result = state(folder, index, a, b)
        result.update(kind=kind, at=at, killed=os.WIFSIGNALED(status))
        results.append(result)
        save(old, path, max_shard_size=shard_size(old_n))
    print(json.dumps({"renames": renames, "duration": duration, "results": results}))


if __name__ == "__main__":
    main()
