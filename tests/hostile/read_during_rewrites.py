"""F6 driver: readers loop open+verify while a writer rewrites the target with other archives.

``python read_during_rewrites.py TARGET REWRITES SHARD_SIZE`` (SHARD_SIZE 0: one file) forks a
writer that rewrites TARGET REWRITES times, cycling through archives 1..3 (same names, shapes and
dtypes, different values: a header of one with the data of another would go unnoticed by size),
and two readers that loop until the writer is done:

- ``weightio.load(target, verify=True)``, then every tensor compared with the archive its spec
  names (the seed is recorded in the spec's name), read *after* a short pause so a lazy reader
  that re-opened the path would see the next version;
- ``weightio verify TARGET`` through the CLI's own entry point (in-process: the same code path as
  the command, without a Python start-up per loop).

Prints JSON: per reader, how many loops, which versions it saw, and the failures (there must be
none).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import load, save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance


def archive(seed: int) -> Archive:
    rng = np.random.default_rng(seed)
    arrays = {f"t{i}": rng.standard_normal(40_000).astype("f4") for i in range(4)}
    layer = OpaqueLayer(name="blob", tensors={k: tensor_ref(f"blob.{k}", a) for k, a in arrays.items()})
    spec = ModelSpec(name=f"v{seed}", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="f6", created_at="now"))
    return Archive(spec, {f"blob.{k}": a for k, a in arrays.items()})


def writer(target: str, rewrites: int, shard: int, done) -> None:
    versions = [archive(seed) for seed in (1, 2, 3)]
    try:
        for i in range(rewrites):
            save(versions[(i + 1) % 3], target, max_shard_size=shard or None)
    finally:
        done.set()


def load_reader(target: str, done, out) -> None:
    expected = {f"v{seed}": archive(seed) for seed in (1, 2, 3)}
    loops, seen, failures = 0, set(), []
    while not done.is_set() or loops < 3:
        loops += 1
        try:
            got = load(target, verify=True)
            time.sleep(0.002)  # the writer moves on; what we hold must not
            ref = expected[got.spec.name]
            for key, array in ref.tensors.items():
                if not np.array_equal(got.tensors[key], array):
                    failures.append(f"{got.spec.name} {key}: values of another version")
            seen.add(got.spec.name)
        except Exception:
            failures.append(traceback.format_exc(limit=3))
    out.put({"reader": "load", "loops": loops, "seen": sorted(seen), "failures": failures[:5]})


def cli_reader(target: str, done, out) -> None:
    from typer.testing import CliRunner

    from weightio.cli import app

    runner = CliRunner()
    loops, failures = 0, []
    while not done.is_set() or loops < 3:
        loops += 1
        result = runner.invoke(app, ["verify", target])
        if result.exit_code != 0 or not result.output.startswith("ok: 4 tensor(s)"):
            failures.append(f"exit {result.exit_code}: {result.output.strip()}")
    out.put({"reader": "cli", "loops": loops, "seen": [], "failures": failures[:5]})


def main() -> None:
    target, rewrites, shard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    save(archive(1), target, max_shard_size=shard or None)
    if shard:
        target = str(Path(target).parent / (Path(target).name + ".index.json"))
    ctx = multiprocessing.get_context("fork")  # a fresh single-threaded parent: forking is safe
    done, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=load_reader, args=(target, done, out)),
             ctx.Process(target=cli_reader, args=(target, done, out))]
    for p in procs:
        p.start()
    write = ctx.Process(target=writer, args=(sys.argv[1], rewrites, shard, done))
    start = time.perf_counter()
    write.start()
    write.join(120)
    duration = time.perf_counter() - start
    reports = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    print(json.dumps({"writer_exit": write.exitcode, "duration": duration, "readers": reports,
                      "files": sorted(os.listdir(Path(sys.argv[1]).parent))}))


if __name__ == "__main__":
    main()
