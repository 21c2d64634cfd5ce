"""F1 driver with deterministic kill points: kill a write at an exact step, report what it left.

``python kill_points.py FOLDER POINT...`` writes archive A to FOLDER/model.safetensors, then for
each POINT forks a child that saves archive B over it and dies at that point:

- ``header-written``, ``before-rename``, ``renamed``: the child sets ``weightio.format.atomic.fault_hook``
  and SIGKILLs itself when the writer reaches that step (header on disk; temp complete and fsynced
  but not renamed; renamed).
- ``mid-tensor``: the child's file-size limit (``RLIMIT_FSIZE``) is set to end halfway through the
  third tensor and SIGXFSZ keeps its default action, so the kernel terminates the process inside
  that ``write`` at an exact byte: as abrupt as SIGKILL (no Python code runs), but at a place no
  timer can hit reliably.

Leftovers of one kill are kept for the next (the test then cleans them). Prints JSON:
``{"old": sha, "new": sha, "header_bytes": n, "results": [{point, signal, sha, leftovers}]}`` with
``leftovers`` as ``{name: size}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sys
from pathlib import Path

import numpy as np

import weightio.format.atomic
from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance

TENSORS, ELEMENTS = 6, 250_000  # 6 MB


def archive(seed: int) -> Archive:
    rng = np.random.default_rng(seed)
    arrays = {f"t{i}": rng.standard_normal(ELEMENTS).astype("f4") for i in range(TENSORS)}
    layer = OpaqueLayer(name="blob", tensors={k: tensor_ref(f"blob.{k}", a) for k, a in arrays.items()})
    spec = ModelSpec(name="blob", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="f1", created_at="now"))
    return Archive(spec, {f"blob.{k}": a for k, a in arrays.items()})


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def header_bytes(path: Path) -> int:
    with open(path, "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


def die_at(point: str, limit: int) -> None:
    """In the child: arrange to die at ``point``."""
    if point == "mid-tensor":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        return

    def hook(reached: str) -> None:
        if reached == point:
            os.kill(os.getpid(), signal.SIGKILL)

    weightio.format.atomic.fault_hook = hook


def main() -> None:
    folder, points = Path(sys.argv[1]), sys.argv[2:]
    target = folder / "model.safetensors"
    old, new = archive(1), archive(2)
    save(new, target)
    sha_new, header = sha(target), header_bytes(target)
    save(old, target)
    sha_old = sha(target)
    # Half-way through the third tensor (the header has the same length in A and B).
    limit = header + 2 * ELEMENTS * 4 + ELEMENTS * 2
    results = []
    for point in points:
        pid = os.fork()
        if pid == 0:
            try:
                die_at(point, limit)
                save(new, target)
            finally:
                os._exit(0)  # reached only if the kill did not happen: the test then fails
        _, status = os.waitpid(pid, 0)
        digest = sha(target)
        leftovers = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != target.name}
        results.append({"point": point, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                        "sha": digest, "leftovers": leftovers})
        if digest != sha_old:
            save(old, target)  # (removes no leftover: they are younger than a minute)
    print(json.dumps({"old": sha_old, "new": sha_new, "header_bytes": header, "limit": limit,
                      "results": results}))


if __name__ == "__main__":
    main()
