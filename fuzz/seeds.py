"""The seed corpus: small valid inputs for every file reader, generated in code (no blobs).

Seeds are kept to a few kilobytes so that random mutations land in structure (headers, pickles,
zip directories, HDF5 object headers) rather than in tensor bytes. Each seed records the reader it
feeds, the file suffix it must keep and the options ``weightio.read`` needs (``architecture=`` for
a ``.weights.h5``, ``key=`` for a training checkpoint).

Usage: ``python fuzz/seeds.py OUT_DIR`` writes the corpus (plus ``seeds.json``) for inspection or
for atheris' corpus directory.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Readers the fuzzer exercises, and how each is called (see ``fuzz.contract``).
READERS = ("archive", "keras", "h5", "pt", "pt_legacy")


@dataclass(frozen=True)
class Seed:
    """One valid input: ``data`` is written to a file named ``name`` (its suffix matters)."""

    reader: str
    name: str
    data: bytes
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        """The part of the name that picks the reader (``.weights.h5`` counts as one)."""
        return ".weights.h5" if self.name.endswith(".weights.h5") else Path(self.name).suffix


def _dense_archive(dtype: str = "f4") -> Any:
    """A 4 -> 3 -> relu -> 2 model built from the spec, written by weightio itself."""
    from weightio.format.archive import Archive, tensor_ref
    from weightio.spec.activations import ActivationFn
    from weightio.spec.core import ActivationLayer, DenseLayer
    from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance

    rng = np.random.default_rng(11)
    w1 = rng.standard_normal((3, 4)).astype(dtype)
    b1 = rng.standard_normal(3).astype(dtype)
    w2 = rng.standard_normal((2, 3)).astype(dtype)
    b2 = rng.standard_normal(2).astype(dtype)
    layers = [
        DenseLayer(name="fc1", units=3, in_features=4, weight=tensor_ref("fc1.weight", w1),
                   bias=tensor_ref("fc1.bias", b1)),
        ActivationLayer(name="act", activation=ActivationFn(name="relu")),
        DenseLayer(name="fc2", units=2, in_features=3, weight=tensor_ref("fc2.weight", w2),
                   bias=tensor_ref("fc2.bias", b2)),
    ]
    spec = ModelSpec(
        name="seed",
        provenance=Provenance(source_framework="weightio", weightio_version="fuzz",
                              created_at="2025-01-01T00:00:00Z"),
        inputs=[InputSpec(name="x", shape=(4,))],
        layers=layers,
        outputs=[OutputSpec(name="y", layer="fc2", class_labels=None)],
    )
    return Archive(spec, {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2})


def _state_arrays() -> dict[str, np.ndarray]:
    import ml_dtypes

    rng = np.random.default_rng(12)
    return {
        "enc.weight": rng.standard_normal((3, 2)).astype("f4"),
        "enc.bias": rng.standard_normal(3).astype("f2"),
        "head.weight": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
        "steps": np.array(7, dtype="i8"),
        "empty": np.zeros((0, 3), dtype="f4"),
        "mask": np.array([True, False, True]),
    }


def _written(write: Callable[[Path], Any], name: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        write(path)
        return path.read_bytes()


def archive_seeds() -> list[Seed]:
    """A weightio archive (with spec), a weights-only archive and a plain safetensors dict."""
    import weightio
    from weightio.format.safetensors import build_header, write_tensors

    arrays = _state_arrays()
    weights_only = weightio.read(arrays, name="wo")

    def plain(path: Path) -> None:
        header, ordered = build_header(list(arrays.items()), {"format": "pt"})
        with open(path, "wb") as handle:
            write_tensors(handle, header, ordered)

    return [
        Seed("archive", "model.safetensors",
             _written(lambda p: weightio.save(_dense_archive(), p), "model.safetensors")),
        Seed("archive", "f16.safetensors",
             _written(lambda p: weightio.save(_dense_archive("f2"), p), "f16.safetensors")),
        Seed("archive", "weights_only.safetensors",
             _written(lambda p: weightio.save(weights_only, p), "weights_only.safetensors")),
        Seed("archive", "state_dict.safetensors", _written(plain, "state_dict.safetensors")),
    ]


def _keras_parts() -> tuple[dict[str, Any], bytes]:
    """The config and ``model.weights.h5`` of the dense model, via weightio's TF-free writer."""
    from weightio.frameworks.keras.files.writer import write_keras_file

    data = _written(lambda p: write_keras_file(_dense_archive(), p), "model.keras")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("config.json")), zf.read("model.weights.h5")


def _rezip(members: list[tuple[str, bytes]], compression: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in members:
            zf.writestr(name, content)
    return buffer.getvalue()


def keras_seeds() -> list[Seed]:
    """``.keras`` zips: as weightio writes them (stored) and with a deflated weights member."""
    from weightio.frameworks.keras.files.writer import write_keras_file

    stored = _written(lambda p: write_keras_file(_dense_archive(), p), "model.keras")
    with zipfile.ZipFile(io.BytesIO(stored)) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    return [
        Seed("keras", "model.keras", stored),
        Seed("keras", "deflated.keras", _rezip(members, zipfile.ZIP_DEFLATED)),
        Seed("keras", "nested.keras", _nested_keras(dict(members))),
    ]


def _nested_keras(members: dict[str, bytes]) -> bytes:
    """The dense model used as the one layer of an outer Sequential (a nested model, read by
    ``frameworks.keras.read.nested``): its config inside the outer's ``layers``, its arrays one
    group deeper (``layers/sequential/layers/dense/vars/0``), as Keras saves a nested model.
    """
    import h5py

    inner = json.loads(members["config.json"])
    first = inner["config"]["layers"][0]
    outer = {
        "module": "keras", "class_name": "Sequential", "registered_name": None,
        "config": {"name": "outer", "trainable": True, "dtype": inner["config"]["dtype"],
                   "layers": [first, inner], "build_input_shape": inner["config"]["build_input_shape"]},
        "build_config": inner["build_config"], "compile_config": {},
    }
    buffer = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as src, h5py.File(buffer, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst.create_group("vars")
        src.copy(src["layers"], dst.create_group("layers").create_group("sequential"), "layers")
        dst["layers/sequential"].create_group("vars")
    parts = dict(members, **{"config.json": json.dumps(outer).encode(), "model.weights.h5": buffer.getvalue()})
    return _rezip(list(parts.items()), zipfile.ZIP_STORED)


def _legacy_config() -> dict[str, Any]:
    layers = [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "dtype": "float32",
                                                 "name": "input_1"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "activation": "relu",
                                           "use_bias": True, "dtype": "float32"}},
        {"class_name": "Dense", "config": {"name": "dense_1", "units": 2, "activation": "linear",
                                           "use_bias": True, "dtype": "float32"}},
    ]
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def _legacy_h5(path: Path, *, compression: str | None = None) -> None:
    """A Keras 2 style ``.h5``: ``model_config`` + ``model_weights/<layer>/<layer>/<w>:0``."""
    import h5py

    rng = np.random.default_rng(13)
    shapes = {"dense": (4, 3), "dense_1": (3, 2)}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(_legacy_config())
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"dense", b"dense_1"])
        for name, (n_in, n_out) in shapes.items():
            g = mw.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(),
                                                f"{name}/bias:0".encode()])
            extra = {"compression": compression, "chunks": True} if compression else {}
            g.create_dataset(f"{name}/kernel:0",
                             data=rng.standard_normal((n_in, n_out)).astype("f4"), **extra)
            g.create_dataset(f"{name}/bias:0", data=rng.standard_normal(n_out).astype("f4"),
                             **extra)


def h5_seeds() -> list[Seed]:
    """Legacy ``.h5`` (contiguous and gzip-chunked) and a Keras 3 ``.weights.h5``."""
    config, weights = _keras_parts()
    return [
        Seed("h5", "model.h5", _written(_legacy_h5, "model.h5")),
        Seed("h5", "gzip.h5", _written(lambda p: _legacy_h5(p, compression="gzip"), "gzip.h5")),
        Seed("h5", "model.weights.h5", weights, {"architecture": config}),
    ]


def _torch_state(torch: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    state = dict(net.state_dict())
    state["extra.half"] = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    state["extra.bf16"] = torch.ones(3, dtype=torch.bfloat16)
    state["extra.view"] = state["0.weight"].t()  # a strided view sharing a storage
    state["extra.count"] = torch.tensor(5, dtype=torch.int64)
    return state


def _torch_seeds(reader: str, legacy: bool) -> list[Seed]:
    try:
        import torch
    except ImportError:
        return []
    state = _torch_state(torch)
    options = {"_use_new_zipfile_serialization": False} if legacy else {}

    def save(obj: Any) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer, **options)
        return buffer.getvalue()

    return [
        Seed(reader, "model.pt", save(state)),
        Seed(reader, "ckpt.pth", save({"model": state, "epoch": 3, "lr": 0.1}), {"key": "model"}),
    ]


def pt_seeds() -> list[Seed]:
    """``torch.save`` zips (needs torch to build; empty without it)."""
    return _torch_seeds("pt", legacy=False)


def pt_legacy_seeds() -> list[Seed]:
    """Pre-1.6 ``torch.save`` pickles (``_use_new_zipfile_serialization=False``)."""
    return _torch_seeds("pt_legacy", legacy=True)


BUILDERS: dict[str, Callable[[], list[Seed]]] = {
    "archive": archive_seeds,
    "keras": keras_seeds,
    "h5": h5_seeds,
    "pt": pt_seeds,
    "pt_legacy": pt_legacy_seeds,
}


def build(readers: tuple[str, ...] | list[str] = READERS) -> dict[str, list[Seed]]:
    """The seeds for each reader in ``readers``."""
    return {reader: BUILDERS[reader]() for reader in readers}


def write_corpus(out: Path, readers: tuple[str, ...] | list[str] = READERS) -> list[dict[str, Any]]:
    """Write every seed under ``out/<reader>/`` and a ``seeds.json`` listing them."""
    listing = []
    for reader, seeds in build(readers).items():
        folder = out / reader
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (folder / seed.name).write_bytes(seed.data)
            listing.append({"reader": reader, "path": str(folder / seed.name),
                            "options": seed.options, "bytes": len(seed.data)})
    (out / "seeds.json").write_text(json.dumps(listing, indent=1))
    return listing


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
    for entry in write_corpus(Path(sys.argv[1])):
        print(f"{entry['reader']:10} {entry['bytes']:7d}  {entry['path']}")
