"""F8: a sharded rewrite killed between shards leaves an index that resolves to a whole set.

``tests/hostile/kill_shards.py`` SIGKILLs a child rewriting set A as set B at every step of the
write (after each shard, after each index write, after each shard takes its final name) and at
random moments; after each kill the index on disk must name only existing shards and load, with
every sha256 verified, as exactly A or exactly B. The in-process tests pin the design choices
documented in ``weightio/sharding.py``: no file the live index names is ever changed, the
standard shard names are kept, and shards no index names are removed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import weightio
import weightio.format.sharding as sharding
from weightio.format.archive import Archive, tensor_ref
from weightio.format.cleanup import clean_stale_temps
from weightio.format.store import load, save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance

HERE = Path(__file__).parent
TESTS = HERE.parent
ROOT = TESTS.parent
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SHARD = 60_000 * 4 + 1000  # one tensor per shard


def blob(seed: int, tensors: int = 4) -> Archive:
    rng = np.random.default_rng(seed)
    arrays = {f"t{i}": rng.standard_normal(60_000).astype("f4") for i in range(tensors)}
    layer = OpaqueLayer(name="blob", tensors={k: tensor_ref(f"blob.{k}", a) for k, a in arrays.items()})
    spec = ModelSpec(name="blob", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="f8", created_at="now"))
    return Archive(spec, {f"blob.{k}": a for k, a in arrays.items()})


def named(index: Path) -> set[str]:
    return set(json.loads(index.read_text())["weight_map"].values())


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def same(archive: Archive, seed: int) -> bool:
    ref = blob(seed, len(archive.tensors))
    return all(np.array_equal(archive.tensors[k], ref.tensors[k]) for k in ref.tensors)


@pytest.mark.parametrize("old_n,new_n", [(4, 4), (4, 2), (4, 1), (1, 4)],
                         ids=["same-count", "shrink", "to-one-file", "from-one-file"])
def test_f8_sharded_rewrite_killed_at_every_step_and_at_random(tmp_path: Path, old_n, new_n) -> None:
    out = subprocess.run([sys.executable, str(TESTS / "hostile" / "kill_shards.py"), str(tmp_path),
                          str(old_n), str(new_n), "2", "8"], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    results = report["results"]
    deterministic = [r for r in results if r["kind"] == "renamed"]
    assert len(deterministic) == report["renames"] >= (new_n + 1 if new_n > 1 else 1)
    for r in results:
        assert r["missing"] == [], r  # no index ever names a missing shard
        assert r["set"] in ("old", "new"), r  # whole A or whole B (verified), never a mix
    if new_n > 1:  # the index is the switch: before it A, from it on B
        for r in deterministic:
            assert r["set"] == ("old" if r["at"] <= new_n else "new"), r
        assert all(r["killed"] for r in deterministic)
    print(f"F8 {old_n}->{new_n} shards: {len(results)} kills, "
          f"{sum(r['set'] == 'old' for r in results)} left A, {sum(r['set'] == 'new' for r in results)} B")
    # Litter of the killed writes: orphan shards and temps go once they are older than a minute.
    when = time.time() - 3600
    for p in tmp_path.iterdir():
        os.utime(p, (when, when))
    index = save(blob(2), tmp_path / "model.safetensors", max_shard_size=SHARD)
    clean_stale_temps([tmp_path])
    assert files(tmp_path) == {index.name} | named(index)
    assert same(load(index, verify=True), 2)


def test_same_count_rewrite_never_touches_a_file_the_live_index_names(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    index = save(blob(1), path, max_shard_size=SHARD)
    before = {name: (tmp_path / name).stat().st_ino for name in named(index)}
    seen = []

    def check(point: str) -> None:  # at every step of the rewrite, the live index is whole
        if point == "renamed":
            live = load(index, verify=True)
            seen.append(same(live, 1) or (same(live, 2) and "new"))
            if same(live, 1):  # still A: its files are the very inodes written for A
                assert {n: (tmp_path / n).stat().st_ino for n in named(index)} == before

    weightio.format.atomic.fault_hook = check
    try:
        save(blob(2), path, max_shard_size=SHARD)
    finally:
        weightio.format.atomic.fault_hook = None
    assert seen[:4] == [True] * 4 and set(seen[4:]) == {"new"}
    assert named(index) == {f"model-{k:05d}-of-00004.safetensors" for k in range(1, 5)}
    assert files(tmp_path) == {index.name} | named(index)  # no generation file left
    assert same(load(index, verify=True), 2)


def test_changed_shard_count_removes_the_old_sets_shards(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    user = tmp_path / "model-notes.safetensors"  # not a shard name: never touched
    user.write_bytes(b"mine")
    index = save(blob(1), path, max_shard_size=SHARD)
    assert len(named(index)) == 4
    save(blob(2, tensors=2), path, max_shard_size=SHARD)
    assert files(tmp_path) == {index.name, user.name, "model-00001-of-00002.safetensors",
                               "model-00002-of-00002.safetensors"}
    assert same(load(index, verify=True), 2)
    save(blob(3, tensors=2), path, max_shard_size=10**9)  # fits in one file now
    assert files(tmp_path) == {"model.safetensors", user.name}
    assert same(load(path, verify=True), 3)
    save(blob(4), path, max_shard_size=SHARD)  # and back: the stale single file goes
    assert files(tmp_path) == {index.name, user.name} | named(index)
    assert same(load(tmp_path, verify=True), 4)


def test_orphan_shards_go_only_once_a_minute_old(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    orphan_old = tmp_path / "model-00003-of-00007.safetensors"
    orphan_new = tmp_path / "model-00001-of-00005.g0123456789ab.safetensors"
    for orphan in (orphan_old, orphan_new):
        orphan.write_bytes(b"left by a killed write")
    when = time.time() - 3600
    os.utime(orphan_old, (when, when))
    index = save(blob(1), path, max_shard_size=SHARD)
    assert not orphan_old.exists()  # a killed write's, long ago
    assert orphan_new.exists()  # may be a concurrent writer's: kept
    assert files(tmp_path) == {index.name, orphan_new.name} | named(index)


def test_without_hard_links_the_set_keeps_generation_names(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.safetensors"
    index = save(blob(1), path, max_shard_size=SHARD)

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(sharding.os, "link", no_links)
    save(blob(2), path, max_shard_size=SHARD)
    monkeypatch.undo()
    generation = named(index)
    assert len(generation) == 4 and all(".g" in name for name in generation)
    assert files(tmp_path) == {index.name} | generation  # A's shards gone, no temp left
    assert same(load(index, verify=True), 2)
    save(blob(3), path, max_shard_size=SHARD)  # the next write takes the standard names again
    assert named(index) == {f"model-{k:05d}-of-00004.safetensors" for k in range(1, 5)}
    assert files(tmp_path) == {index.name} | named(index)
    assert same(load(index, verify=True), 3)
