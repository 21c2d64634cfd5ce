"""Generate the bad-input battery of ``/work/shared/RELIABILITY.md`` into a folder.

Usage: ``python tests/hostile/generate.py OUT_DIR``. Writes one sub-folder per item and
``OUT_DIR/manifest.json``, a list of items::

    {"id": "item02_header_length_2_40", "path": "<file the reader is given>",
     "op": "load" | "load_verify" | "verify" | "read" | "convert",
     "expect": ["MalformedFileError", ...],   # acceptable WeightioError subclasses
     "modules": [...],                        # modules the file names; never to be imported
     "canary": "<file a payload would create>", "match": "<text the message must hold>"}

No binary blob is committed: every input is built here, from the format's documentation, with
the standard library (plus PyTorch for the items that need ``torch.save``/``torch.jit.save``;
those are left out, and reported as skipped, when torch is not installed).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from registry import ITEMS, dense_archive, item  # noqa: E402 - the battery's one registry

PAYLOAD_MODULES = ["posix", "os", "subprocess", "webbrowser", "nt", "builtins"]



# --- safetensors helpers -----------------------------------------------------------------------

def st_bytes(header: Any, data: bytes, *, raw_header: bytes | None = None, pad: bool = True) -> bytes:
    body = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        body += b" " * (-(8 + len(body)) % 8)
    return struct.pack("<Q", len(body)) + body + data


def valid_archive(folder: Path) -> Path:
    """A real weightio archive (a 4->3 dense layer) written by weightio itself."""
    return dense_archive(folder / "valid.safetensors")


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def simple(header: dict[str, Any] | None = None) -> tuple[dict[str, Any], bytes]:
    header = header or {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    return header, bytes(16)


def case(folder: Path, name: str, content: bytes, op: str, expect: list[str], **extra: Any) -> dict[str, Any]:
    path = folder / name
    path.write_bytes(content)
    return {"path": str(path), "op": op, "expect": expect, **extra}


MAL = ["MalformedFileError"]


# --- items 1-16: safetensors / archive -----------------------------------------------------------

@item("item01_empty_file")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", b"", "load", MAL)


@item("item01_seven_bytes")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00", "load", MAL)


@item("item02_header_length_2_40")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", struct.pack("<Q", 2**40) + b"{" + b" " * 91, "load", MAL)


@item("item03_header_100mb_plus_1_sparse")
def _(d: Path) -> dict[str, Any]:
    n = 100 * 1024 * 1024 + 1
    path = d / "model.safetensors"
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", n) + b"{")
        handle.truncate(8 + n + 16)  # sparse: the filesystem stores almost nothing
    return {"path": str(path), "op": "load", "expect": ["ResourceLimitError"]}


@item("item04_header_not_utf8")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", st_bytes(None, b"", raw_header=b'{"\xff\xfe":1}'), "load", MAL)


@item("item04_header_not_json")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", st_bytes(None, b"", raw_header=b"{not json"), "load", MAL)


@item("item04_header_json_array")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", st_bytes(None, b"", raw_header=b"[1,2,3]"), "load", MAL)


@item("item04_header_duplicate_key")
def _(d: Path) -> dict[str, Any]:
    entry = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    raw = b'{"w":' + entry + b',"w":' + entry + b"}"
    return case(d, "model.safetensors", st_bytes(None, bytes(4), raw_header=raw), "load", MAL)


def _entry_raw(shape: str, offsets: str) -> bytes:
    return f'{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}'.encode()


for _name, _shape, _offsets in [
    ("item06_nan_in_shape", "[NaN]", "[0,4]"),
    ("item06_infinity_in_offsets", "[1]", "[0,Infinity]"),
    ("item06_float_in_shape", "[1.0]", "[0,4]"),
    ("item06_bool_in_shape", "[true]", "[0,4]"),
    ("item06_negative_offset", "[1]", "[-4,0]"),
    ("item06_negative_shape", "[-1]", "[0,4]"),
]:
    def _make(d: Path, shape: str = _shape, offsets: str = _offsets) -> dict[str, Any]:
        return case(d, "model.safetensors", st_bytes(None, bytes(4), raw_header=_entry_raw(shape, offsets)),
                    "load", MAL)
    item(_name)(_make)


def _two(a: list[int], b: list[int], size: int) -> bytes:
    header = {"a": {"dtype": "U8", "shape": [a[1] - a[0]], "data_offsets": a},
              "b": {"dtype": "U8", "shape": [b[1] - b[0]], "data_offsets": b}}
    return st_bytes(header, bytes(size))


@item("item07_offsets_overlap")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", _two([0, 8], [4, 12], 12), "load", MAL)


@item("item07_offsets_reversed")
def _(d: Path) -> dict[str, Any]:
    raw = b'{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}'
    return case(d, "model.safetensors", st_bytes(None, bytes(8), raw_header=raw), "load", MAL)


@item("item07_offsets_gap")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.safetensors", _two([0, 4], [8, 12], 12), "load", MAL)


@item("item07_trailing_bytes_polyglot")
def _(d: Path) -> dict[str, Any]:
    header, data = simple()
    return case(d, "model.safetensors", st_bytes(header, data) + b"PK\x05\x06" + bytes(18), "load", MAL)


@item("item08_mlx_1000x1000_offsets_0_4")
def _(d: Path) -> dict[str, Any]:
    header = {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4]}}
    return case(d, "model.safetensors", st_bytes(header, bytes(4)), "load", MAL)


@item("item10_dtype_F128")
def _(d: Path) -> dict[str, Any]:
    header = {"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}
    return case(d, "model.safetensors", st_bytes(header, bytes(16)), "load", ["UnsupportedDtypeError"])


@item("item10_dtype_lowercase_f32")
def _(d: Path) -> dict[str, Any]:
    header = {"w": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}}
    return case(d, "model.safetensors", st_bytes(header, bytes(4)), "load", ["UnsupportedDtypeError"])


def _with_meta(d: Path, change: Callable[[dict[str, Any]], None], expect: list[str], **extra: Any) -> dict[str, Any]:
    header, data = split(valid_archive(d))
    change(header)
    (d / "valid.safetensors").unlink()
    return case(d, "model.safetensors", st_bytes(header, data), "load", expect, **extra)


@item("item11_metadata_value_not_string")
def _(d: Path) -> dict[str, Any]:
    # Ruling: the safetensors format itself says __metadata__ maps strings to strings, so this
    # breaks the container before any spec is read (safetensors refuses it too): Malformed.
    return _with_meta(d, lambda h: h["__metadata__"].update({"weightio.format_version": 1}),
                      ["MalformedFileError"], match="__metadata__")


@item("item11_missing_format_version")
def _(d: Path) -> dict[str, Any]:
    return _with_meta(d, lambda h: h["__metadata__"].pop("weightio.format_version"),
                      ["SpecValidationError"])


@item("item11_future_major_version")
def _(d: Path) -> dict[str, Any]:
    return _with_meta(d, lambda h: h["__metadata__"].update({"weightio.format_version": "99.0"}),
                      ["SpecValidationError"])


@item("item12_spec_nested_100000_deep")
def _(d: Path) -> dict[str, Any]:
    deep = "[" * 100_000 + "]" * 100_000
    return _with_meta(d, lambda h: h["__metadata__"].update({"weightio.spec": deep}),
                      ["SpecValidationError"])


@item("item12_spec_nested_object_100000_deep")
def _(d: Path) -> dict[str, Any]:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    return _with_meta(d, lambda h: h["__metadata__"].update({"weightio.spec": deep}),
                      ["SpecValidationError"])


@item("item12_header_nested_100000_deep")
def _(d: Path) -> dict[str, Any]:
    raw = b'{"w":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return case(d, "model.safetensors", st_bytes(None, b"", raw_header=raw), "load", MAL)


@item("item12_spec_60mb_string")
def _(d: Path) -> dict[str, Any]:
    def change(h: dict[str, Any]) -> None:
        spec = json.loads(h["__metadata__"]["weightio.spec"])
        spec["name"] = "x" * (60 * 1024 * 1024)
        h["__metadata__"]["weightio.spec"] = json.dumps(spec)
    return _with_meta(d, change, ["ResourceLimitError", "SpecValidationError"])


def _spec_change(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(h: dict[str, Any]) -> None:
        spec = json.loads(h["__metadata__"]["weightio.spec"])
        fn(spec)
        h["__metadata__"]["weightio.spec"] = json.dumps(spec)
    return change


def _layer(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["layers"][0]


@item("item13_header_missing_tensor")
def _(d: Path) -> dict[str, Any]:
    def change(h: dict[str, Any]) -> None:
        h.pop("fc.bias")  # offsets of the weight still cover only its own bytes
    header, data = split(valid_archive(d))
    (d / "valid.safetensors").unlink()
    w = header["fc.weight"]
    n = w["data_offsets"][1] - w["data_offsets"][0]
    del header["fc.bias"]
    header["fc.weight"]["data_offsets"] = [0, n]
    start = min(header["fc.weight"]["data_offsets"])
    return case(d, "model.safetensors", st_bytes(header, data[:n] if start == 0 else data[-n:]), "load",
                ["SpecValidationError"], match="fc")


@item("item13_header_extra_tensor")
def _(d: Path) -> dict[str, Any]:
    header, data = split(valid_archive(d))
    (d / "valid.safetensors").unlink()
    header["extra"] = {"dtype": "U8", "shape": [4], "data_offsets": [len(data), len(data) + 4]}
    return case(d, "model.safetensors", st_bytes(header, data + bytes(4)), "load",
                ["SpecValidationError"], match="extra")


@item("item13_spec_shape_differs")
def _(d: Path) -> dict[str, Any]:
    return _with_meta(d, _spec_change(lambda s: _layer(s)["bias"].update({"shape": [4]})),
                      ["SpecValidationError"], match="fc")


@item("item13_spec_dtype_differs")
def _(d: Path) -> dict[str, Any]:
    return _with_meta(d, _spec_change(lambda s: _layer(s)["bias"].update({"dtype": "I32"})),
                      ["SpecValidationError"], match="fc")


@item("item13_units_not_weight_rows")
def _(d: Path) -> dict[str, Any]:
    return _with_meta(d, _spec_change(lambda s: _layer(s).update({"units": 5})),
                      ["SpecValidationError"], match="fc")


@item("item14_flipped_byte_verify")
def _(d: Path) -> dict[str, Any]:
    raw = bytearray(valid_archive(d).read_bytes())
    (d / "valid.safetensors").unlink()
    raw[-3] ^= 0x01
    return case(d, "model.safetensors", bytes(raw), "verify", ["IntegrityError"])


@item("item14_flipped_byte_verified_load")
def _(d: Path) -> dict[str, Any]:
    raw = bytearray(valid_archive(d).read_bytes())
    (d / "valid.safetensors").unlink()
    raw[-3] ^= 0x01
    return case(d, "model.safetensors", bytes(raw), "load_verify", ["IntegrityError"])


@item("item15_last_byte_cut")
def _(d: Path) -> dict[str, Any]:
    raw = valid_archive(d).read_bytes()
    (d / "valid.safetensors").unlink()
    return case(d, "model.safetensors", raw[:-1], "load", MAL)


def _sharded(d: Path, weight_map: dict[str, str], make_shards: Callable[[Path], None], expect: list[str]) -> dict[str, Any]:
    make_shards(d)
    index = {"metadata": {"total_size": 16}, "weight_map": weight_map}
    path = d / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    return {"path": str(path), "op": "load", "expect": expect}


def _shard(d: Path, name: str, key: str = "w") -> None:
    (d / name).write_bytes(st_bytes({key: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))


@item("item16_shard_dotdot")
def _(d: Path) -> dict[str, Any]:
    return _sharded(d, {"w": "../outside.safetensors"}, lambda d: _shard(d.parent, "outside.safetensors"),
                    ["ExternalReferenceError"])


@item("item16_shard_absolute_path")
def _(d: Path) -> dict[str, Any]:
    return _sharded(d, {"w": "/etc/hostname.safetensors"}, lambda d: None, ["ExternalReferenceError"])


@item("item16_shard_escaping_symlink")
def _(d: Path) -> dict[str, Any]:
    def make(d: Path) -> None:
        outside = d.parent / f"{d.name}-outside"
        outside.mkdir()
        _shard(outside, "real.safetensors")
        (d / "s1.safetensors").symlink_to(outside / "real.safetensors")
    return _sharded(d, {"w": "s1.safetensors"}, make, ["ExternalReferenceError"])


@item("item16_shard_missing")
def _(d: Path) -> dict[str, Any]:
    return _sharded(d, {"w": "s1.safetensors"}, lambda d: None, MAL)


@item("item16_tensor_in_two_shards")
def _(d: Path) -> dict[str, Any]:
    def make(d: Path) -> None:
        _shard(d, "s1.safetensors")
        _shard(d, "s2.safetensors")
    return _sharded(d, {"w": "s1.safetensors", "x": "s2.safetensors"}, make, MAL)


# --- items 17-23: PyTorch; item 36: pickles ---------------------------------------------------------

class _Payload:
    """Unpickling it would run ``touch CANARY``."""

    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.canary}",))


class _ImportPayload:
    """Unpickling it would import ``webbrowser`` (not otherwise loaded)."""

    def __reduce__(self) -> Any:
        import webbrowser

        return (webbrowser.get, ())


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _payload_obj(d: Path) -> Any:
    return {"evil": _Payload(str(d / "CANARY")), "imp": _ImportPayload()}


TORCH_MODULES = ["posix", "webbrowser", "os", "subprocess"]


@item("item17_pt_zip_reduce_payload")
def _(d: Path) -> dict[str, Any]:
    torch = _torch()
    if torch is None:
        return {"skip": "torch is not installed"}
    obj = {"weight": torch.ones(2), **_payload_obj(d)}
    torch.save(obj, d / "model.pt")
    return {"path": str(d / "model.pt"), "op": "read", "expect": ["UnsafeFormatError"],
            "modules": TORCH_MODULES, "c_parser": True}


@item("item17_pt_legacy_reduce_payload")
def _(d: Path) -> dict[str, Any]:
    torch = _torch()
    if torch is None:
        return {"skip": "torch is not installed"}
    obj = {"weight": torch.ones(2), **_payload_obj(d)}
    torch.save(obj, d / "model.pt", _use_new_zipfile_serialization=False)
    return {"path": str(d / "model.pt"), "op": "read", "expect": ["UnsafeFormatError"],
            "modules": TORCH_MODULES}


@item("item17_pt_plain_pickle_reduce_payload")
def _(d: Path) -> dict[str, Any]:
    data = pickle.dumps(_payload_obj(d), protocol=2)
    return case(d, "model.pt", data, "read", ["UnsafeFormatError", "MalformedFileError"],
                modules=TORCH_MODULES)


@item("item18_torchscript_renamed_pt")
def _(d: Path) -> dict[str, Any]:
    torch = _torch()
    if torch is None:
        return {"skip": "torch is not installed"}
    module = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(module, str(d / "model.pt"))
    return {"path": str(d / "model.pt"), "op": "read", "expect": ["UnsafeFormatError"], "c_parser": True}


@item("item20_training_checkpoint")
def _(d: Path) -> dict[str, Any]:
    torch = _torch()
    if torch is None:
        return {"skip": "torch is not installed"}
    net = torch.nn.Linear(2, 2)
    # what torch.optim.SGD(momentum=0.9).state_dict() holds, built directly (torch.optim is slow to import)
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(2, 2)}, 1: {"momentum_buffer": torch.ones(2)}},
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
    # two state dicts (model and its EMA): which one is meant cannot be guessed (a checkpoint
    # holding only one is read, picking it: tests/verbs/test_sources_every_verb.py)
    torch.save({"model": net.state_dict(), "ema": net.state_dict(), "optimizer": optimizer,
                "epoch": 3}, d / "ckpt.pt")
    return {"path": str(d / "ckpt.pt"), "op": "read", "expect": MAL, "match": "several state dicts",
            "c_parser": True}


def _torch_item(make: Callable[[Any], Any], key: str = "bad") -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        torch = _torch()
        if torch is None:
            return {"skip": "torch is not installed"}
        torch.save({"ok": torch.ones(2), key: make(torch)}, d / "model.pt")
        return {"path": str(d / "model.pt"), "op": "read", "expect": ["UnsupportedTensorError"],
                "c_parser": True}
    return build


item("item21_quantized_tensor")(_torch_item(
    lambda t: t.quantize_per_tensor(t.ones(4), 0.1, 0, t.qint8)))
item("item21_sparse_tensor")(_torch_item(lambda t: t.eye(3).to_sparse()))
item("item21_meta_tensor")(_torch_item(lambda t: t.empty(3, device="meta")))


class _Sub:  # defined lazily with torch present
    pass


@item("item21_subclass_tensor")
def _(d: Path) -> dict[str, Any]:
    torch = _torch()
    if torch is None:
        return {"skip": "torch is not installed"}
    import importlib.util
    import types

    # A tensor subclass from a module the reader does not have: the pickle names it.
    source = "import torch\nclass MyTensor(torch.Tensor):\n    pass\n"
    mod = types.ModuleType("weightio_battery_subclass")
    exec(compile(source, "weightio_battery_subclass", "exec"), mod.__dict__)
    sys.modules["weightio_battery_subclass"] = mod
    sub = torch.ones(3).as_subclass(mod.MyTensor)
    torch.save({"ok": torch.ones(2), "bad": sub}, d / "model.pt")
    del importlib
    return {"path": str(d / "model.pt"), "op": "read",
            "expect": ["UnsupportedTensorError", "UnsafeFormatError"],
            "modules": ["weightio_battery_subclass"], "c_parser": True}


@item("item23_zip_bomb_member")
def _(d: Path) -> dict[str, Any]:
    path = d / "model.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("model/version", "3\n")
        zf.writestr("model/byteorder", "little")
        # a data.pkl that inflates 1000:1 (20 MB of zeros in about 20 kB)
        with zf.open("model/data.pkl", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(20):
                member.write(chunk)
    return {"path": str(path), "op": "read", "expect": ["ResourceLimitError"], "c_parser": True}


@item("item36_pkl_reduce_payload")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.pkl", pickle.dumps(_payload_obj(d)), "read", ["UnsafeFormatError"],
                modules=TORCH_MODULES)


@item("item36_joblib_reduce_payload")
def _(d: Path) -> dict[str, Any]:
    return case(d, "model.joblib", pickle.dumps(_payload_obj(d)), "read", ["UnsafeFormatError"],
                modules=TORCH_MODULES)


# --- the other items live in their own modules; importing one registers its items --------------

import keras_h5_items  # noqa: E402,F401,I001  items 24-35: Keras files and HDF5
import sklearn_items  # noqa: E402,F401  items 37-39: scikit-learn files
import fuzz_items  # noqa: E402,F401  items 40+: what the mutation fuzzer found
import round2_items  # noqa: E402,F401  items 41-47: the second round of hand-made attacks


def generate(out: Path, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Write every item under ``out`` and return the manifest (also written as manifest.json)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, build in ITEMS:
        if only is not None and name not in only:
            continue
        folder = out / name
        folder.mkdir()
        entry = {"id": name, "modules": [], "c_parser": False, "match": None, **build(folder)}
        entry.setdefault("canary", str(folder / "CANARY"))
        entry["folder"] = str(folder)
        manifest.append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def item_ids() -> list[str]:
    return [name for name, _ in ITEMS]


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
