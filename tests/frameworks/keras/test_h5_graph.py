"""HDF5 hard links make a file a graph: a shared group and a group inside itself answer fast.

A ``.keras`` whose ``model.weights.h5`` puts 40 levels of groups under a layer, each level linked
twice to the next (2**40 paths through 40 groups), and one whose group holds a hard link to itself:
the reader enters each group once (``format/graph.GraphWalk`` keyed by object address) and refuses
both in milliseconds, typed, naming the file. Built with h5py and zipfile only (no Keras).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import weightio  # noqa: E402
from weightio.errors import MalformedFileError  # noqa: E402

CONFIG = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
    {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "dtype": "float32",
                                            "name": "input_layer"}},
    {"class_name": "Dense", "config": {"name": "dense", "units": 3, "activation": "linear",
                                       "use_bias": True, "dtype": "float32"}}]}}


def weights_h5(levels: int | None) -> bytes:
    """``layers/dense`` with its two vars and a ``sub`` group: a DAG of ``levels``, or a cycle."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset("1", data=np.ones(3, "f4"))
        group = f["layers/dense"].create_group("sub")
        if levels is None:
            group["again"] = group
        for i in range(levels or 0):
            nxt = f.create_group(f"level{i}")
            group["a"] = nxt
            group["b"] = nxt
            group = nxt
    return buf.getvalue()


def keras_file(path: Path, h5: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        zf.writestr("config.json", json.dumps(CONFIG))
        zf.writestr("model.weights.h5", h5)
    return path


@pytest.mark.parametrize(("levels", "match"), [(40, "same object"), (None, "contains itself")])
def test_shared_and_cyclic_groups_are_refused_fast(tmp_path: Path, levels: int | None,
                                                   match: str) -> None:
    h5 = weights_h5(levels)
    for path, options in ((keras_file(tmp_path / "m.keras", h5), {}),
                          (tmp_path / "m.weights.h5", {"architecture": CONFIG})):
        if path.suffix == ".h5":
            path.write_bytes(h5)
        weightio.read(keras_file(tmp_path / "warm.keras", weights_h5(0)))  # imports, once
        start = time.perf_counter()
        with pytest.raises(MalformedFileError, match=match) as caught:
            weightio.read(path, **options)
        assert time.perf_counter() - start < 0.5
        assert path.name in str(caught.value)


def test_an_unshared_tree_still_reads(tmp_path: Path) -> None:
    archive = weightio.read(keras_file(tmp_path / "m.keras", weights_h5(0)))
    assert [layer.name for layer in archive.spec.layers] == ["dense"]
