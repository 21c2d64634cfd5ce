"""A deflated ``model.weights.h5`` whose datasets lie in reverse order reads like a stored one.

h5py reads datasets in the config's order; here the file holds them last layer first, so every
read seeks backwards, and a backward seek in a deflate stream restarts it from the member's start
(quadratic: 11 s for 100 MB, 205 s for a larger model). The reader inflates the member once into
an anonymous file and reads that: the same bits, at the speed of the stored file.
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

LAYERS, SIZE = 160, 256  # 160 x 256 KiB kernels: 40 MB of float32, 320 backward seeks


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("deflated")
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for i in reversed(range(LAYERS)):  # the last layer's data first in the file
            v = f.create_group(f"layers/{'dense' if i == 0 else f'dense_{i}'}/vars")
            v.create_dataset("0", data=rng.standard_normal((SIZE, SIZE)).astype("f4"))
            v.create_dataset("1", data=rng.standard_normal(SIZE).astype("f4"))
    layers = [{"class_name": "InputLayer", "config": {"batch_shape": [None, SIZE],
                                                       "dtype": "float32", "name": "input_layer"}}]
    layers += [{"class_name": "Dense", "config": {"name": f"d{i}", "units": SIZE, "use_bias": True,
                                                  "activation": "linear", "dtype": "float32"}}
               for i in range(LAYERS)]
    config = json.dumps({"class_name": "Sequential", "config": {"name": "seq", "layers": layers}})
    out = []
    for name, compression in (("stored.keras", zipfile.ZIP_STORED),
                              ("deflated.keras", zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(folder / name, "w", compression=compression, compresslevel=1) as zf:
            zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
            zf.writestr("config.json", config)
            zf.writestr("model.weights.h5", buf.getvalue())
        out.append(folder / name)
    return out[0], out[1]


def _read_all(path: Path) -> tuple[float, dict[str, bytes]]:
    start = time.perf_counter()
    archive = weightio.read(path)
    values = {key: np.asarray(array).tobytes() for key, array in archive.tensors.items()}
    return time.perf_counter() - start, values


def test_reverse_ordered_deflated_weights_read_at_stored_speed(files: tuple[Path, Path]) -> None:
    stored, deflated = files
    _read_all(stored)  # imports and page cache, once
    stored_s, stored_values = _read_all(stored)
    deflated_s, deflated_values = _read_all(deflated)
    assert deflated_values == stored_values  # bit for bit
    assert len(deflated_values) == 2 * LAYERS
    # inflating 40 MB once costs a fraction of a second; restarting it at each backward seek
    # (about 20 MB each) is 6 GB of inflating
    assert deflated_s < 2 * stored_s + 1.0, (deflated_s, stored_s)
