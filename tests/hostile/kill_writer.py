"""F1 driver: SIGKILL a write of a ~48 MB archive at random points; report what each kill left.

``python kill_writer.py FOLDER KILLS SEED`` writes archive A to FOLDER/model.safetensors, then
KILLS times forks a child that saves archive B over it and SIGKILLs the child after a random
delay spread over the measured duration of a whole write by a forked child (some kills land before the write
starts or after it ends, as they would in life). After each kill it records the sha256 of the
target and the leftover files, resets the target to A when B landed, and finally prints JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np

from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance


def archive(seed: int) -> Archive:
    rng = np.random.default_rng(seed)
    arrays = {f"t{i}": rng.standard_normal(2_000_000).astype("f4") for i in range(6)}  # 48 MB
    layer = OpaqueLayer(name="blob", tensors={k: tensor_ref(f"blob.{k}", a) for k, a in arrays.items()})
    spec = ModelSpec(name="blob", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="f1", created_at="now"))
    return Archive(spec, {f"blob.{k}": a for k, a in arrays.items()})


def sha(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    folder, kills, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    target = folder / "model.safetensors"
    old, new = archive(1), archive(2)
    save(new, folder / "new.safetensors")
    sha_new = sha(folder / "new.safetensors")
    os.unlink(folder / "new.safetensors")
    save(old, target)
    sha_old = sha(target)
    start = time.perf_counter()  # calibrate: a whole write by a forked child, as in the loop
    pid = os.fork()
    if pid == 0:
        try:
            save(new, target)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    duration = time.perf_counter() - start
    save(old, target)
    rnd = random.Random(seed)
    results = []
    for i in range(kills):
        delay = rnd.uniform(0.0, duration * 1.2)
        pid = os.fork()
        if pid == 0:
            try:
                save(new, target)
            finally:
                os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        digest = sha(target)
        leftovers = sorted(p.name for p in folder.iterdir() if p.name != target.name)
        results.append({"delay": delay, "killed": os.WIFSIGNALED(status), "sha": digest,
                        "leftovers": leftovers})
        if i < kills - 1:  # keep only the last kill's leftovers (for the clean-up check): disk space
            for name in leftovers:
                if name.startswith(f".{target.name}.weightio-tmp-"):
                    os.unlink(folder / name)
        if digest != sha_old:
            save(old, target)
    print(json.dumps({"old": sha_old, "new": sha_new, "duration": duration, "results": results}))


if __name__ == "__main__":
    main()
