"""Battery items 24-35: Keras ``.keras``/``.h5`` files and HDF5 containers, built with h5py and
zipfile only (no Keras). Registered in ``registry.ITEMS`` when ``generate.py`` imports this module."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from registry import MAL, item  # the battery's one registry


def case(folder: Path, name: str, content: bytes, op: str, expect: list[str], **extra: Any) -> dict[str, Any]:
    path = folder / name
    path.write_bytes(content)
    return {"path": str(path), "op": op, "expect": expect, **extra}


# --- items 24-28: Keras files; 29-34: HDF5 (built with h5py, no Keras) ---------------------------

def _lambda_payload(canary: str) -> str:
    """What Keras stores for ``Lambda(lambda x: os.system('touch CANARY'))``: marshalled code."""
    import base64
    import marshal

    code = compile(f"lambda x: __import__('os').system('touch {canary}')", "<lambda>", "eval")
    return base64.b64encode(marshal.dumps(code)).decode()


def _keras_config(d: Path, *, extra_layers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "dtype": "float32",
                                                 "name": "input_layer"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "activation": "linear",
                                           "use_bias": True, "dtype": "float32"}},
        *(extra_layers or []),
    ]
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": layers}}


def _lambda_layer(d: Path) -> dict[str, Any]:
    return {"class_name": "Lambda", "module": "keras.layers", "config": {
        "name": "evil_lambda", "function": {"class_name": "__lambda__", "config": {
            "code": _lambda_payload(str(d / "CANARY")), "defaults": None, "closure": None}}}}


def _unsafe_layer() -> dict[str, Any]:
    return {"module": "os", "class_name": "system", "registered_name": "os>system",
            "config": {"name": "touch", "command": "touch CANARY",
                       "on_load": {"module": "keras.config", "class_name":
                                   "enable_unsafe_deserialization"}}}


def legacy_h5(path: Path, config: dict[str, Any], *, weights: Callable[[Any], None] | None = None,
              layer_names: list[bytes] | None = None) -> Path:
    """A Keras 2 style ``.h5`` model: ``model_config`` + ``model_weights/<layer>/<weight>``."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        mw = f.create_group("model_weights")
        names = [_name(c) for c in config["config"]["layers"][1:]]
        mw.attrs["layer_names"] = np.array(layer_names if layer_names is not None
                                           else [n.encode() for n in names])
        for name in names:
            g = mw.create_group(name)
            if name == "dense":
                g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
                if weights is None:
                    g.create_dataset("dense/kernel:0", data=np.ones((4, 3), "f4"))
                    g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))
                else:
                    weights(g)
            else:
                g.attrs["weight_names"] = np.array([], dtype="S1")
    return path


def _name(cfg: dict[str, Any]) -> str:
    return cfg["config"]["name"]


def keras_zip(path: Path, config: dict[str, Any], *, members: list[tuple[str, bytes]] | None = None,
              weights: bool = True) -> Path:
    """A Keras 3 ``.keras`` zip: config.json, metadata.json, model.weights.h5 (h5py-built)."""
    import h5py

    h5 = path.parent / "_w.h5"
    with h5py.File(h5, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset("1", data=np.ones(3, "f4"))
    data = h5.read_bytes()
    h5.unlink()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        zf.writestr("config.json", json.dumps(config))
        if weights:
            zf.writestr("model.weights.h5", data)
        for name, content in members or []:
            zf.writestr(zipfile.ZipInfo(name), content)
    return path


# torch is not listed: converting to .pt imports it, as it should; the file names keras and os
LAMBDA_MODULES = ["os", "posix", "subprocess", "marshal", "keras", "tensorflow"]


@item("item24_keras_lambda_layer")
def _(d: Path) -> dict[str, Any]:
    path = keras_zip(d / "model.keras", _keras_config(d, extra_layers=[_lambda_layer(d)]))
    return {"path": str(path), "op": "convert", "expect": ["UnsupportedLayerError"],
            "match": "evil_lambda", "modules": LAMBDA_MODULES, "c_parser": True}


@item("item25_keras_module_os_system")
def _(d: Path) -> dict[str, Any]:
    path = keras_zip(d / "model.keras", _keras_config(d, extra_layers=[_unsafe_layer()]))
    return {"path": str(path), "op": "convert", "expect": ["UnsupportedLayerError"],
            "match": "touch", "modules": LAMBDA_MODULES + ["keras.config"], "c_parser": True}


def _lookup(vocabulary: str) -> dict[str, Any]:
    return {"class_name": "StringLookup", "module": "keras.layers", "config": {
        "name": "lookup", "vocabulary": vocabulary, "output_mode": "int"}}


@item("item26_stringlookup_vocab_etc_hostname")
def _(d: Path) -> dict[str, Any]:
    path = keras_zip(d / "model.keras", _keras_config(d, extra_layers=[_lookup("/etc/hostname")]))
    return {"path": str(path), "op": "read", "expect": ["ExternalReferenceError"], "c_parser": True}


@item("item26_stringlookup_vocab_url")
def _(d: Path) -> dict[str, Any]:
    path = keras_zip(d / "model.keras",
                     _keras_config(d, extra_layers=[_lookup("http://127.0.0.1:9/x")]))
    return {"path": str(path), "op": "read", "expect": ["ExternalReferenceError"], "c_parser": True}


@item("item27_keras_member_dotdot")
def _(d: Path) -> dict[str, Any]:
    path = keras_zip(d / "model.keras", _keras_config(d), members=[("../evil", b"x")])
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True}


@item("item27_keras_duplicate_members")
def _(d: Path) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        path = keras_zip(d / "model.keras", _keras_config(d), members=[("config.json", b"{}")])
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True}


@item("item27_keras_missing_weights")
def _(d: Path) -> dict[str, Any]:
    path = keras_zip(d / "model.keras", _keras_config(d), weights=False)
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True}


@item("item28_legacy_h5_lambda_layer")
def _(d: Path) -> dict[str, Any]:
    path = legacy_h5(d / "model.h5", _keras_config(d, extra_layers=[_lambda_layer(d)]))
    return {"path": str(path), "op": "convert", "expect": ["UnsupportedLayerError"],
            "match": "evil_lambda", "modules": LAMBDA_MODULES, "c_parser": True}


def _h5_item(weights: Callable[[Any, Path], None], expect: list[str]) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        path = legacy_h5(d / "model.h5", _keras_config(d), weights=lambda g: weights(g, d))
        return {"path": str(path), "op": "read", "expect": expect, "c_parser": True}
    return build


def _other_h5(d: Path) -> Path:
    import h5py

    other = d.parent / f"{d.name}-other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("kernel", data=np.ones((4, 3), "f4"))
        f.create_dataset("g/kernel:0", data=np.ones((4, 3), "f4"))
    return other


def _external_link(g: Any, d: Path) -> None:
    import h5py

    g["dense/kernel:0"] = h5py.ExternalLink(str(_other_h5(d)), "kernel")
    g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))


def _soft_link(g: Any, d: Path) -> None:
    import h5py

    g.create_dataset("hidden", data=np.ones((4, 3), "f4"))
    g["dense/kernel:0"] = h5py.SoftLink(g.name + "/hidden")
    g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))


def _intermediate_external(g: Any, d: Path) -> None:
    import h5py

    g["dense"] = h5py.ExternalLink(str(_other_h5(d)), "g")  # the group holding the weight


def _external_storage(g: Any, d: Path) -> None:
    raw = d.parent / f"{d.name}-raw.bin"
    raw.write_bytes(np.ones((4, 3), "<f4").tobytes())
    g.create_dataset("dense/kernel:0", shape=(4, 3), dtype="<f4", external=[(str(raw), 0, 48)])
    g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))


def _virtual(g: Any, d: Path) -> None:
    import h5py

    layout = h5py.VirtualLayout(shape=(4, 3), dtype="f4")
    layout[:] = h5py.VirtualSource(str(_other_h5(d)), "kernel", shape=(4, 3))
    g.create_virtual_dataset("dense/kernel:0", layout)
    g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))


def _unknown_filter(g: Any, d: Path) -> None:
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((4, 3))
    dcpl.set_filter(32008, h5py.h5z.FLAG_OPTIONAL, (0,))
    space = h5py.h5s.create_simple((4, 3))
    grp = g.create_group("dense")
    h5py.h5d.create(grp.id, b"kernel:0", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
    g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))


def _typed(make: Callable[[Any], None]) -> Callable[[Any, Path], None]:
    def weights(g: Any, d: Path) -> None:
        make(g)
        g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))
    return weights


item("item29_weight_is_external_link")(_h5_item(_external_link, ["ExternalReferenceError"]))
item("item29_weight_is_soft_link")(_h5_item(_soft_link, ["ExternalReferenceError"]))
item("item29_intermediate_group_external_link")(_h5_item(_intermediate_external, ["ExternalReferenceError"]))
item("item30_external_storage_dataset")(_h5_item(_external_storage, ["ExternalReferenceError"]))
item("item30_virtual_dataset")(_h5_item(_virtual, ["ExternalReferenceError"]))
item("item32_unregistered_filter_32008")(_h5_item(_unknown_filter, ["UnsupportedDtypeError", "MalformedFileError", "ExternalReferenceError", "UnsafeFormatError"]))
item("item33_compound_dtype")(_h5_item(_typed(lambda g: g.create_dataset(
    "dense/kernel:0", data=np.zeros((4, 3), [("a", "f4"), ("b", "i4")]))), ["UnsupportedDtypeError"]))
item("item33_vlen_string")(_h5_item(_typed(lambda g: g.create_dataset(
    "dense/kernel:0", data=np.array([["a"] * 3] * 4, dtype=object),
    dtype=__import__("h5py").string_dtype())), ["UnsupportedDtypeError"]))
item("item33_reference_dtype")(_h5_item(_typed(lambda g: g.create_dataset(
    "dense/kernel:0", shape=(4, 3), dtype=__import__("h5py").ref_dtype)), ["UnsupportedDtypeError"]))
item("item33_bare_V2_without_bf16")(_h5_item(_typed(lambda g: g.create_dataset(
    "dense/kernel:0", data=np.zeros((4, 3), "V2"))), ["UnsupportedDtypeError"]))


def _h5_names(layer_names: list[bytes] | None, weight_names: list[bytes] | None) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        def weights(g: Any) -> None:
            g.create_dataset("dense/kernel:0", data=np.ones((4, 3), "f4"))
            g.create_dataset("dense/bias:0", data=np.ones(3, "f4"))
            if weight_names is not None:
                g.attrs["weight_names"] = np.array(weight_names)
        path = legacy_h5(d / "model.h5", _keras_config(d), weights=weights, layer_names=layer_names)
        return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True}
    return build


item("item34_layer_names_dotdot")(_h5_names([b".."], None))
item("item34_layer_names_absolute")(_h5_names([b"/model_weights/dense"], None))
item("item34_layer_names_missing_group")(_h5_names([b"dense", b"ghost"], None))
item("item34_weight_names_dotdot")(_h5_names(None, [b"../dense/dense/kernel:0", b"dense/bias:0"]))
item("item34_weight_names_absolute")(_h5_names(None, [b"/model_weights/dense/dense/kernel:0", b"dense/bias:0"]))
item("item34_weight_names_missing")(_h5_names(None, [b"dense/ghost:0", b"dense/bias:0"]))


def _h5_bytes(d: Path) -> bytes:
    tmp = legacy_h5(d / "_valid.h5", _keras_config(d))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


@item("item35_h5_truncated")
def _(d: Path) -> dict[str, Any]:
    data = _h5_bytes(d)
    return case(d, "model.h5", data[: len(data) // 2], "read", MAL, c_parser=True)


@item("item35_h5_random_bytes_after_superblock")
def _(d: Path) -> dict[str, Any]:
    data = bytearray(_h5_bytes(d))
    rng = np.random.default_rng(35)
    data[96:] = rng.integers(0, 256, len(data) - 96, dtype=np.uint8).tobytes()
    return case(d, "model.h5", bytes(data), "read", MAL, c_parser=True)
