"""Battery items 41-47: the second round of hand-made attacks (issue 12), one group per class.

- item41_graph_*: object graphs that are not trees (pickle memo references, HDF5 hard links);
- item42_loss_*: files that read as something other than they are (colliding keys, state set
  through BUILD, tensor flags, a storage declared two ways, polyglots, duplicate JSON keys);
- item43_size_*: sizes that do not come from bytes that exist (stride-0 views, hyper-parameters
  implying huge outputs, headers that parse into gigabytes, non-finite numbers);
- item44_verify_*: Keras configs naming anything but Keras' own classes, met by verification;
- item45_terminal_*: names made of markup, ANSI escapes, NUL and bidi overrides, printed;
- item46_regular_*: FIFOs, devices and escaping links as sources and targets;
- item47_deflate_*: a deflated ``model.weights.h5`` whose datasets lie in reverse order.

Everything is built here in code (h5py, zipfile and hand-assembled pickles; no PyTorch, no Keras),
and every item has a time limit that a hang fails. Registered in ``registry.ITEMS`` when
``generate.py`` imports this module.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from keras_h5_items import keras_zip
from pickles import P, floats, pt_legacy, pt_zip, shared_lists, state_dict
from registry import MAL, dense_archive, item

#: A reader answers these in milliseconds; the limit is for a loaded machine, and a hang fails.
FAST = 10


def case(folder: Path, name: str, content: bytes, op: str, expect: list[str], **extra: Any) -> dict[str, Any]:
    path = folder / name
    path.write_bytes(content)
    return {"path": str(path), "op": op, "expect": expect, "timeout": FAST, **extra}


def _file(path: Path, op: str, expect: list[str], **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "op": op, "expect": expect, "timeout": FAST, **extra}


# --- item 41: object graphs are graphs ----------------------------------------------------------

@item("item41_graph_pickle_list_shared_40_levels")
def _(d: Path) -> dict[str, Any]:
    # 40 list objects, 2**40 paths: the file is under 1 kB
    data = pickle.dumps({"weights": shared_lists(40)}, protocol=2)
    return _file(pt_legacy(d / "model.pt", data, []), "read", MAL, match="not all tensors")


@item("item41_graph_pickle_list_inside_itself_zip")
def _(d: Path) -> dict[str, Any]:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    data = pickle.dumps({"w": cyclic}, protocol=2)
    return _file(pt_zip(d / "model.pt", data, {}), "read", MAL, match="contains itself")


@item("item41_graph_pickle_dict_inside_itself_legacy")
def _(d: Path) -> dict[str, Any]:
    # {"w": <the same dict>} through the memo: BINPUT 0 ... BINGET 0 SETITEM
    data = P().empty_dict().put(0).text("w").get(0).setitem().done()
    return _file(pt_legacy(d / "model.pt", data, []), "read", MAL, match="contains itself")


@item("item41_graph_pickle_nested_100000_deep")
def _(d: Path) -> dict[str, Any]:
    # [[[...]]] 100 000 deep, built inside out through the memo (the opcodes torch runs): each
    # level pushes a new list, fetches the previous one and appends it
    p = P().empty_list().put(0)
    for level in range(1, 100_000):
        p.empty_list().get(level - 1).append().put(level)
    return _file(pt_legacy(d / "model.pt", p.done(), []), "read", ["ResourceLimitError"],
                 match="nests deeper")


def _shared_tuples(p: P, levels: int, base: int = 1000) -> P:
    """``levels`` nested tuples, each holding the one below twice, left on the stack."""
    p.empty_tuple().put(base)
    for level in range(levels):  # the tuple below is on top: pair it with itself (TUPLE2)
        p.get(base + level).raw(b"\x86").put(base + level + 1)
    return p


@item("item41_graph_pickle_tuple_key_shared_40_levels")
def _(d: Path) -> dict[str, Any]:
    # a dict key whose hash() would walk 2**40 tuples
    p = _shared_tuples(P().empty_dict(), 40).int(1).setitem()
    return _file(pt_legacy(d / "model.pt", p.done(), []), "read", MAL, match="dict key")


@item("item41_graph_pickle_storage_reference_holding_shared_lists")
def _(d: Path) -> dict[str, Any]:
    # found by fuzzing: the refusal's message used to repr() the reference (2**40 steps)
    shared = pickle.dumps(shared_lists(40), protocol=2)[2:-1]  # the list, without PROTO and STOP
    p = P().ordered_dict().mark().text("w").glob("torch._utils", "_rebuild_tensor_v2").mark()
    p.mark().text("storage").raw(shared).text("0").text("cpu").int(2).none().tuple().persid()
    p.int(0).ints((2,)).ints((1,)).false().ordered_dict().tuple().reduce().setitems()
    path = pt_legacy(d / "model.pt", p.done(), [])
    return _file(path, "read", MAL, match="storage reference")


def _h5_with_sub(make_sub: Any) -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset("1", data=np.ones(3, "f4"))
        make_sub(f, f["layers/dense"].create_group("sub"))
    return buf.getvalue()


def _dag(f: Any, group: Any, levels: int = 40) -> None:
    for i in range(levels):
        nxt = f.create_group(f"level{i}")
        group["a"] = nxt
        group["b"] = nxt
        group = nxt


def _cycle(f: Any, group: Any) -> None:
    group["again"] = group


_KERAS = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
    {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "dtype": "float32",
                                            "name": "input_layer"}},
    {"class_name": "Dense", "config": {"name": "dense", "units": 3, "activation": "linear",
                                       "use_bias": True, "dtype": "float32"}}]}}


def _keras_with(path: Path, h5: bytes, *, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        zf.writestr("config.json", json.dumps(_KERAS))
        zf.writestr("model.weights.h5", h5)
    return path


@item("item41_graph_h5_groups_shared_40_levels_keras")
def _(d: Path) -> dict[str, Any]:
    path = _keras_with(d / "model.keras", _h5_with_sub(_dag))
    return _file(path, "read", MAL, match="same object", c_parser=True)


@item("item41_graph_h5_group_inside_itself_weights_h5")
def _(d: Path) -> dict[str, Any]:
    path = d / "model.weights.h5"
    path.write_bytes(_h5_with_sub(_cycle))
    return _file(path, "read", MAL, match="contains itself", c_parser=True,
                 options={"architecture": _KERAS})


# --- item 42: no silent loss, no disagreement with torch -----------------------------------------

@item("item42_loss_colliding_keys_pt")
def _(d: Path) -> dict[str, Any]:
    data = P().ordered_dict().mark().text("x").tensor("0", 2, (2,), (1,)).text("x.x") \
        .tensor("1", 2, (2,), (1,)).setitems().done()
    path = pt_zip(d / "model.pt", data, {"0": floats(1, 1), "1": floats(0, 0)})
    return _file(path, "read", ["SpecValidationError"], match="'x' and 'x.x'")


@item("item42_loss_key_that_is_a_prefix_safetensors")
def _(d: Path) -> dict[str, Any]:
    header = {"a.b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "a.b.c": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    body = json.dumps(header).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return case(d, "model.safetensors", struct.pack("<Q", len(body)) + body + bytes(8), "read",
                ["SpecValidationError"], match="'a.b' and 'a.b.c'")


@item("item42_loss_state_dict_attribute_through_build")
def _(d: Path) -> dict[str, Any]:
    # BUILD {"items": OrderedDict}: an instance attribute shadowing dict.items (torch keeps it)
    build = P()
    build.b = bytearray()
    build.empty_dict().mark().text("items").glob("collections", "OrderedDict").setitems().build()
    data = P().ordered_dict().mark().text("w").tensor("0", 2, (2,), (1,)).setitems() \
        .raw(bytes(build.b)).done()
    return _file(pt_zip(d / "model.pt", data, {"0": floats(1, 2)}), "read",
                 ["UnsafeFormatError"], match="'items'")


@item("item42_loss_negated_view_flag")
def _(d: Path) -> dict[str, Any]:
    data = P().ordered_dict().mark().text("w").tensor("0", 2, (2,), (1,), metadata={"neg": False}) \
        .setitems().done()
    return _file(pt_zip(d / "model.pt", data, {"0": floats(1, 2)}), "read",
                 ["UnsupportedTensorError"], match="neg")


def _two_dtypes(pid_len: int) -> bytes:
    return (P().ordered_dict().mark()
            .text("a").tensor("0", 2, (2,), (1,), pid_len=pid_len)
            .text("b").tensor("0", 2, (2,), (1,), pid_len=pid_len, storage="IntStorage")
            .setitems().done())


@item("item42_loss_storage_two_dtypes_zip")
def _(d: Path) -> dict[str, Any]:
    return _file(pt_zip(d / "model.pt", _two_dtypes(5), {"0": floats(1, 2)}), "read", MAL,
                 match="declared twice")


@item("item42_loss_storage_two_dtypes_legacy")
def _(d: Path) -> dict[str, Any]:
    path = pt_legacy(d / "model.pt", _two_dtypes(6), [("0", floats(1, 2), 4)])
    return _file(path, "read", MAL, match="declared twice")


@item("item42_loss_legacy_pickle_with_zip_appended")
def _(d: Path) -> dict[str, Any]:
    path = pt_legacy(d / "model.pt", state_dict([("w", "0", 2)], pid_len=6), [("0", floats(1, 2), 4)])
    extra = io.BytesIO()
    with zipfile.ZipFile(extra, "w") as zf:
        zf.writestr("archive/data.pkl", state_dict([]))
        zf.writestr("archive/version", b"3\n")
    path.write_bytes(path.read_bytes() + extra.getvalue())
    return _file(path, "read", MAL, match="zip")


@item("item42_loss_legacy_big_endian_flag")
def _(d: Path) -> dict[str, Any]:
    path = pt_legacy(d / "model.pt", state_dict([("w", "0", 2)], pid_len=6),
                     [("0", floats(1, 2), 4)], little_endian=False)
    return _file(path, "read", MAL, match="big-endian")


@item("item42_loss_spec_json_duplicate_key")
def _(d: Path) -> dict[str, Any]:
    def change(spec: str) -> str:  # the first layer named twice: which one is it?
        return spec.replace('"name":"fc"', '"name":"fc","name":"evil"', 1)
    return _archive_with_spec(d, change, ["SpecValidationError"], match="appears twice")


def _archive_with_spec(d: Path, change: Any, expect: list[str], **extra: Any) -> dict[str, Any]:
    raw = dense_archive(d / "valid.safetensors").read_bytes()
    (d / "valid.safetensors").unlink()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    spec = header["__metadata__"]["weightio.spec"]
    header["__metadata__"]["weightio.spec"] = change(spec)
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return case(d, "model.safetensors", struct.pack("<Q", len(body)) + body + raw[8 + n:], "load",
                expect, **extra)


# --- item 43: sizes come from bytes that exist ---------------------------------------------------

@item("item43_size_stride_zero_view_of_4_bytes_claiming_64_gib")
def _(d: Path) -> dict[str, Any]:
    data = P().ordered_dict().mark().text("w").tensor("0", 1, (1 << 17, 1 << 17), (0, 0)) \
        .setitems().done()
    return _file(pt_zip(d / "model.pt", data, {"0": floats(1)}), "read", ["ResourceLimitError"],
                 match="stride", memory=1 << 30)


def _spec_layer(d: Path, layer: dict[str, Any], shape: list[Any]) -> dict[str, Any]:
    def change(spec: str) -> str:
        data = json.loads(spec)
        data["inputs"][0]["shape"] = shape
        data["layers"] = [layer]
        data["outputs"] = [{"name": "y", "layer": layer["name"]}]
        return json.dumps(data)
    # the dense layer's tensors are no longer referenced: keep the header's tensors out of it
    raw = dense_archive(d / "valid.safetensors").read_bytes()
    (d / "valid.safetensors").unlink()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header = {"__metadata__": header["__metadata__"]}
    header["__metadata__"]["weightio.spec"] = change(header["__metadata__"]["weightio.spec"])
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return case(d, "model.safetensors", struct.pack("<Q", len(body)) + body, "load",
                ["SpecValidationError"], match="would output at least", memory=1 << 30)


@item("item43_size_upsampling_factor_2_40")
def _(d: Path) -> dict[str, Any]:
    return _spec_layer(d, {"kind": "upsampling", "name": "up", "rank": 2, "size": [2**40, 1]},
                       [3, 4, 4])


@item("item43_size_reshape_target_2_40")
def _(d: Path) -> dict[str, Any]:
    return _spec_layer(d, {"kind": "reshape", "name": "r", "target_shape": [2**20, 2**20]},
                       [3, 4, 4])


@item("item43_size_padding_of_2_31_with_free_input")
def _(d: Path) -> dict[str, Any]:
    return _spec_layer(d, {"kind": "zero_padding", "name": "pad", "rank": 2,
                           "padding": [[2**31, 2**31], [0, 0]]}, [3, None, None])


@item("item43_size_header_100_mib_of_empty_lists")
def _(d: Path) -> dict[str, Any]:
    count = ((100 << 20) - 4096) // 3
    header = (b'{"w":{"dtype":"U8","shape":[],"data_offsets":[0,0]},"x":['
              + b"[]," * (count - 1) + b"[]]}")
    header += b" " * (-(8 + len(header)) % 8)
    return case(d, "model.safetensors", struct.pack("<Q", len(header)) + header, "load",
                ["ResourceLimitError"], match="to parse", memory=1 << 30, timeout=60)


for _value in ("Infinity", "-Infinity", "1e400"):
    def _make(d: Path, value: str = _value) -> dict[str, Any]:
        return _archive_with_spec(d, lambda s: s.replace('"units":3', f'"units":{value}', 1),
                                  ["SpecValidationError"])
    item(f"item43_size_spec_integer_{_value.replace('-', 'minus_').lower()}")(_make)


# --- item 44: verification hands Keras nothing but Keras' own classes ----------------------------

_VERIFY_MODULES = ["weightio_battery_evil", "tensorflow", "keras", "tf_keras"]


def _keras_naming(d: Path, edit: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(_KERAS))
    edit(config["config"]["layers"][1])
    path = keras_zip(d / "model.keras", config)
    return {"path": str(path), "op": "convert_archive", "timeout": 60, "c_parser": True,
            "expect": ["UnsafeFormatError", "UnsupportedLayerError"], "match": "dense",
            "modules": _VERIFY_MODULES}


@item("item44_verify_layer_from_another_module")
def _(d: Path) -> dict[str, Any]:
    return _keras_naming(d, lambda layer: layer.update(module="weightio_battery_evil"))


@item("item44_verify_layer_registered_as_custom_object")
def _(d: Path) -> dict[str, Any]:
    return _keras_naming(d, lambda layer: layer.update(module="keras.layers",
                                                        registered_name="Evil>Dense"))


@item("item44_verify_initializer_from_another_module")
def _(d: Path) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("keras") is None:  # the TF-free reading is exact; only Keras'
        return {"skip": "Keras is not installed"}   # loader would import the initializer's module
    return _keras_naming(d, lambda layer: layer["config"].update(kernel_initializer={
        "module": "weightio_battery_evil", "class_name": "Init", "config": {},
        "registered_name": None}))


# --- item 45: what reaches a terminal is text -----------------------------------------------------

_NAMES = ["[bold red]red[/]", "[/x]", "\x1b[2J\x1b[31mclear", "nul\x00byte", "bidi\u202etxt",
          ":smile:", "cr\rover", "bell\x07"]
_RAW = ["\x1b[2J", "\x1b[31m", "\x00", "\u202e", "\rover", "\x07"]
_SHOWN = ["[bold red]red[/]", "[/x]", ":smile:", "\\x1b[2J\\x1b[31mclear", "nul\\x00byte",
          "bidi\\u202etxt", "cr\\x0dover"]


def _named_state_dict(path: Path, scale: float) -> Path:
    header: dict[str, Any] = {}
    for i, name in enumerate(_NAMES):
        key = f"p{i}.{name}" if "/" in name else f"{name}.weight"
        header[key] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    body = json.dumps(header, ensure_ascii=False).encode()
    body += b" " * (-(8 + len(body)) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + struct.pack(f"<{len(_NAMES)}f",
                                                                       *[scale] * len(_NAMES)))
    return path


def _terminal(d: Path, verb: list[str], exit_code: int, two: bool = False) -> dict[str, Any]:
    a = _named_state_dict(d / "a.safetensors", 1.0)
    args = [*verb, str(a)]
    if two:
        args.append(str(_named_state_dict(d / "b.safetensors", 2.0)))
    return {"path": str(a), "op": "cli", "args": args, "outcome": "cli", "exit": exit_code,
            "absent": _RAW, "present": _SHOWN, "expect": [], "timeout": 60}


@item("item45_terminal_inspect_names_with_markup_ansi_bidi")
def _(d: Path) -> dict[str, Any]:
    return _terminal(d, ["inspect"], 0)


@item("item45_terminal_inspect_stats_names_with_markup_ansi_bidi")
def _(d: Path) -> dict[str, Any]:
    return _terminal(d, ["inspect", "--stats"], 0)


@item("item45_terminal_diff_names_with_markup_ansi_bidi")
def _(d: Path) -> dict[str, Any]:
    return _terminal(d, ["diff"], 1, two=True)


@item("item45_terminal_error_line_naming_a_hostile_key")
def _(d: Path) -> dict[str, Any]:
    header = {" \x1b[2J\u202e\n.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    body = json.dumps(header, ensure_ascii=False).encode()
    body += b" " * (-(8 + len(body)) % 8)
    path = d / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body + bytes(4))
    return {"path": str(path), "op": "cli", "args": ["inspect", str(path)], "outcome": "cli",
            "exit": 2, "absent": ["\x1b[2J", "\u202e", "\n.weight"], "expect": [],
            "present": ["error: ", "\\x1b[2J\\u202e\\x0a"], "timeout": 60}


# --- item 46: only regular files ------------------------------------------------------------------

@item("item46_regular_fifo_as_source")
def _(d: Path) -> dict[str, Any]:
    if not hasattr(os, "mkfifo"):
        return {"skip": "no FIFOs on this platform"}
    os.mkfifo(d / "model.safetensors")
    return _file(d / "model.safetensors", "read", ["UnsupportedSourceError"], match="FIFO")


@item("item46_regular_fifo_as_shard_index")
def _(d: Path) -> dict[str, Any]:
    if not hasattr(os, "mkfifo"):
        return {"skip": "no FIFOs on this platform"}
    os.mkfifo(d / "model.safetensors.index.json")
    return _file(d / "model.safetensors.index.json", "read", ["UnsupportedSourceError"],
                 match="FIFO")


@item("item46_regular_device_as_source")
def _(d: Path) -> dict[str, Any]:
    return {"path": "/dev/zero", "op": "read", "expect": ["UnsupportedSourceError"],
            "match": "device", "timeout": FAST}


@item("item46_regular_shard_index_linking_out_of_its_folder")
def _(d: Path) -> dict[str, Any]:
    outside = d.parent / f"{d.name}-outside"
    outside.mkdir()
    (outside / "real.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    (d / "model.safetensors.index.json").symlink_to(outside / "real.safetensors.index.json")
    return _file(d / "model.safetensors.index.json", "read", ["ExternalReferenceError"],
                 match="outside its folder")


@item("item46_regular_fifo_as_output")
def _(d: Path) -> dict[str, Any]:
    if not hasattr(os, "mkfifo"):
        return {"skip": "no FIFOs on this platform"}
    source = dense_archive(d / "source.safetensors")
    os.mkfifo(d / "out.safetensors")
    return _file(d / "out.safetensors", "save_over", ["WriteError"], source=str(source),
                 match="FIFO", still="fifo")


@item("item46_regular_device_node_as_output")
def _(d: Path) -> dict[str, Any]:
    source = dense_archive(d / "source.safetensors")
    try:  # a node of /dev/null's numbers, made here: replacing it must not happen either
        os.mknod(d / "null.safetensors", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (AttributeError, OSError) as exc:
        return {"skip": f"cannot make a device node here ({exc})"}
    return _file(d / "null.safetensors", "save_over", ["WriteError"], source=str(source),
                 match="device", still="device")


# --- item 47: compressed HDF5 in any order --------------------------------------------------------

@item("item47_deflate_weights_h5_in_reverse_order")
def _(d: Path) -> dict[str, Any]:
    import h5py

    layers, size = 160, 256  # 40 MB of float32, 320 datasets, each read seeking backwards
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for i in reversed(range(layers)):
            v = f.create_group(f"layers/{'dense' if i == 0 else f'dense_{i}'}/vars")
            v.create_dataset("0", data=rng.standard_normal((size, size)).astype("f4"))
            v.create_dataset("1", data=rng.standard_normal(size).astype("f4"))
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, size], "dtype": "float32",
                                                "name": "input_layer"}},
        *({"class_name": "Dense", "config": {"name": f"d{i}", "units": size, "use_bias": True,
                                             "activation": "linear", "dtype": "float32"}}
          for i in range(layers))]}}
    path = d / "model.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buf.getvalue())
    # read at the speed of a stored file (under a second); restarting inflation at every
    # backward seek took 30 s on this file
    return {"path": str(path), "op": "read_values", "outcome": "ok", "expect": [],
            "timeout": 15, "c_parser": True}
