"""Battery items 40+: inputs the mutation fuzzer (``fuzz/``) found, minimized and rebuilt in code.

Each item is a valid file built here (h5py, zipfile, pickle, struct) and then damaged the way
the fuzzer damaged it, at a place found by the format's own structure (a signature, a header
field), never at a hard-coded offset of a particular library version's layout. Before each
fix the reader failed with the error named in the item's comment (or hung, or crashed);
registered in ``registry.ITEMS`` when ``generate.py`` imports this module.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from registry import MAL, item  # the battery's one registry


def _write(d: Path, name: str, data: bytes, op: str = "read", expect: list[str] = MAL,
           **extra: Any) -> dict[str, Any]:
    path = d / name
    path.write_bytes(data)
    return {"path": str(path), "op": op, "expect": expect, **extra}


def _legacy_h5(d: Path, **attrs: Any) -> bytes:
    """A Keras 2 style ``.h5`` (one Dense layer), its ``model_config`` a variable-length string."""
    import h5py

    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "name": "in"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "use_bias": True}}]}}
    tmp = d / "_build.h5"
    with h5py.File(tmp, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        for key, value in attrs.items():
            f.attrs[key] = value
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"dense"])
        dense = g.create_group("dense")
        dense.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        dense.create_dataset("dense/kernel:0", data=np.ones((4, 3), "f4"))
        dense.create_dataset("dense/bias:0", data=np.ones(3, "f4"))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _zero_first_heap_object(data: bytes) -> bytes:
    """Make the first object of the first global heap collection "free space of size 0": HDF5
    1.14's collection parser then never advances (an endless loop in C)."""
    at = data.index(b"GCOL")
    length = 8  # h5py's default size of lengths
    obj = at + 8 + length
    out = bytearray(data)
    out[obj:obj + 2] = b"\x00\x00"  # heap object index 0: free space
    out[obj + 8:obj + 8 + length] = bytes(length)  # of size 0
    return bytes(out)


# --- HDF5 ---------------------------------------------------------------------------------------

@item("item40_fuzz_h5_global_heap_zero_size_loop")
def _(d: Path) -> dict[str, Any]:
    # was: a hang inside H5HG__cache_heap_deserialize reading model_config (no Python timeout
    # can interrupt it)
    return _write(d, "model.h5", _zero_first_heap_object(_legacy_h5(d)), c_parser=True,
                  match="global heap")


@item("item40_fuzz_keras_global_heap_zero_size_loop")
def _(d: Path) -> dict[str, Any]:
    # the same heap inside model.weights.h5 of a .keras zip (stored, and deflated: the scan
    # then reads the member's stream)
    import h5py

    tmp = d / "_w.h5"
    with h5py.File(tmp, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.attrs["name"] = "dense"  # Keras 3 marks vars with the layer name: a global heap string
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset("1", data=np.ones(3, "f4"))
    weights = _zero_first_heap_object(tmp.read_bytes())
    tmp.unlink()
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "use_bias": True}}]}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights)
    return _write(d, "model.keras", buffer.getvalue(), c_parser=True, match="global heap")


@item("item40_fuzz_h5_damaged_global_heap_signature")
def _(d: Path) -> dict[str, Any]:
    # was: OSError "bad global heap collection signature" from h5py reading model_config
    return _write(d, "model.h5", _legacy_h5(d).replace(b"GCOL", b"GCXL", 1), c_parser=True)


@item("item40_fuzz_h5_damaged_btree_signature")
def _(d: Path) -> dict[str, Any]:
    # was: RuntimeError/KeyError from h5py listing a group whose B-tree node is damaged
    data = _legacy_h5(d)
    at = data.index(b"TREE", data.index(b"TREE") + 1)  # a group below the root
    return _write(d, "model.h5", data[:at] + b"TRE\x00" + data[at + 4:], c_parser=True)


@item("item40_fuzz_h5_weight_name_not_utf8")
def _(d: Path) -> dict[str, Any]:
    # was: UnicodeDecodeError decoding a weight_names entry
    import h5py

    data = _legacy_h5(d)
    path = d / "model.h5"
    path.write_bytes(data)
    with h5py.File(path, "a") as f:
        f["model_weights/dense"].attrs["weight_names"] = np.array([b"dense/\xffkernel:0",
                                                                    b"dense/bias:0"])
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True, "match": "UTF-8"}


@item("item40_fuzz_h5_model_config_not_utf8")
def _(d: Path) -> dict[str, Any]:
    # was: UnicodeEncodeError: h5py hands back undecodable bytes as surrogates
    import h5py

    path = d / "model.h5"
    path.write_bytes(_legacy_h5(d))
    with h5py.File(path, "a") as f:
        del f.attrs["model_config"]
        f.attrs.create("model_config", b'{"class_name": "Seq\xff"}',
                       dtype=h5py.string_dtype("utf-8"))
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True}


# --- zip containers -----------------------------------------------------------------------------

def _torch_zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def _state_pickle() -> bytes:
    """``data.pkl`` of ``torch.save({"w": torch.ones(2)})``, written by hand (protocol 2)."""
    return (b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02("
            b"(X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05"
            b"X\x03\x00\x00\x00cpuq\x06K\x02tq\x07QK\x00K\x02\x85q\x08K\x01\x85q\tt\x89"
            b"ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.")


def _pt_members() -> dict[str, bytes]:
    return {"archive/data.pkl": _state_pickle(), "archive/byteorder": b"little",
            "archive/data/0": np.ones(2, "<f4").tobytes(), "archive/version": b"3\n"}


@item("item40_fuzz_pt_zip_member_bad_crc")
def _(d: Path) -> dict[str, Any]:
    # was: zipfile.BadZipFile "Bad CRC-32 for file 'archive/data.pkl'"
    data = bytearray(_torch_zip(_pt_members()))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("archive/data.pkl")
    start = info.header_offset + 30 + len(info.filename.encode())
    local_extra = struct.unpack("<H", data[info.header_offset + 28:info.header_offset + 30])[0]
    data[start + local_extra + info.file_size - 2] ^= 0x01  # a byte of the pickle, before STOP
    return _write(d, "model.pt", bytes(data), c_parser=True)


@item("item40_fuzz_pt_zip_bad_local_header")
def _(d: Path) -> dict[str, Any]:
    # was: zipfile.BadZipFile "Bad magic number for file header" when reading data.pkl
    data = bytearray(_torch_zip(_pt_members()))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("archive/data.pkl")
    data[info.header_offset:info.header_offset + 4] = b"PK\x00\x00"
    return _write(d, "model.pt", bytes(data), c_parser=True)


@item("item40_fuzz_pt_zip_encrypted_member")
def _(d: Path) -> dict[str, Any]:
    # was: RuntimeError "is encrypted, password required for extraction"
    data = bytearray(_torch_zip(_pt_members()))
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = zf.getinfo("archive/data.pkl")
    central = data.index(b"PK\x01\x02" + data[data.index(b"PK\x01\x02") + 4:][:0])
    while True:  # the central directory entry of data.pkl: set its "encrypted" flag bit
        name_len = struct.unpack("<H", data[central + 28:central + 30])[0]
        if data[central + 46:central + 46 + name_len] == info.filename.encode():
            break
        central = data.index(b"PK\x01\x02", central + 4)
    flags = struct.unpack("<H", data[central + 8:central + 10])[0] | 0x1
    data[central + 8:central + 10] = struct.pack("<H", flags)
    return _write(d, "model.pt", bytes(data), c_parser=True)


@item("item40_fuzz_pt_zip64_multi_disk_end_record")
def _(d: Path) -> dict[str, Any]:
    # was: zipfile.BadZipFile "zipfiles that span multiple disks are not supported", raised
    # out of zipfile.is_zipfile itself
    data = _torch_zip(_pt_members())
    end = data.rindex(b"PK\x05\x06")
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 2)  # ZIP64 locator: 2 disks
    return _write(d, "model.pt", data[:end] + locator + data[end:], c_parser=True)


@item("item40_fuzz_keras_corrupt_deflate_stream")
def _(d: Path) -> dict[str, Any]:
    # was: zlib.error "Error -3 while decompressing" from inside h5py reading model.weights.h5
    import h5py

    tmp = d / "_w.h5"
    with h5py.File(tmp, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.create_dataset("0", data=np.arange(12, dtype="f4").reshape(4, 3))
        v.create_dataset("1", data=np.ones(3, "f4"))
    weights = tmp.read_bytes()
    tmp.unlink()
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "use_bias": True}}]}}
    data = bytearray(_torch_zip({"config.json": json.dumps(config).encode(),
                                 "model.weights.h5": weights}, compression=zipfile.ZIP_DEFLATED))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename.encode())
    start += struct.unpack("<H", data[info.header_offset + 28:info.header_offset + 30])[0]
    for i in range(start + info.compress_size // 3, start + info.compress_size // 3 + 16):
        data[i] = 0xFF  # garbage in the middle of the deflate stream
    return _write(d, "model.keras", bytes(data), c_parser=True)


# --- pickles and safetensors --------------------------------------------------------------------

@item("item40_fuzz_pt_legacy_huge_binbytes")
def _(d: Path) -> dict[str, Any]:
    # was: MemoryError: the unpickler allocates a BINBYTES8 object's stated size before reading
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    huge = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x" * 16 + b"."
    return _write(d, "model.pt", magic + version + info + huge,
                  expect=["ResourceLimitError", "MalformedFileError"])


@item("item40_fuzz_pt_legacy_bad_strides_unnamed")
def _(d: Path) -> dict[str, Any]:
    # was: a MalformedFileError that did not name the file (strides were an OrderedDict)
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    obj = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
           b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
           b"K\x02tQK\x00K\x02\x85ccollections\nOrderedDict\n)R\x89ccollections\nOrderedDict\n)R"
           b"tRs.")
    return _write(d, "model.pt", magic + version + info + obj, match="strides")


def _st(header: dict[str, Any], data: bytes) -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-(8 + len(body)) % 8)
    return struct.pack("<Q", len(body)) + body + data


@item("item40_fuzz_safetensors_empty_tensor_huge_dim")
def _(d: Path) -> dict[str, Any]:
    # was: numpy ValueError "array is too big" building the (empty) array of shape [0, 2**62]
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "e": {"dtype": "F32", "shape": [0, 1 << 62], "data_offsets": [8, 8]}}
    return _write(d, "model.safetensors", _st(header, bytes(8)), match="larger than any array")


@item("item40_fuzz_safetensors_lone_surrogate_name")
def _(d: Path) -> dict[str, Any]:
    # was: a header whose tensor name is a lone surrogate ("\ud800"): read, then unwritable
    body = b'{"w\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    body += b" " * (-(8 + len(body)) % 8)
    return _write(d, "model.safetensors", struct.pack("<Q", len(body)) + body + bytes(8))


@item("item40_fuzz_keras_config_non_string_policy_class")
def _(d: Path) -> dict[str, Any]:
    # was: AttributeError "'float' object has no attribute 'startswith'" in the quantization check
    import h5py

    tmp = d / "_w.h5"
    with h5py.File(tmp, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset("1", data=np.ones(3, "f4"))
    weights = tmp.read_bytes()
    tmp.unlink()
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "use_bias": True,
                                           "dtype": {"class_name": 1.5, "config": {"name": "int8"}}}}]}}
    data = _torch_zip({"config.json": json.dumps(config).encode(), "model.weights.h5": weights})
    return _write(d, "model.keras", data, op="convert", expect=["UnsupportedLayerError"],
                  c_parser=True)


@item("item40_fuzz_h5_layer_with_empty_name")
def _(d: Path) -> dict[str, Any]:
    # was: pydantic ValidationError building the opaque layer of an unmapped layer named ""
    import h5py

    path = d / "model.h5"
    path.write_bytes(_legacy_h5(d))
    with h5py.File(path, "a") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"].append({"class_name": "Frobnicate", "config": {"name": ""}})
        f.attrs["model_config"] = json.dumps(config)
    return {"path": str(path), "op": "read", "expect": ["SpecValidationError"], "c_parser": True}


def _dense_config(d: Path) -> None:
    """``d/config.json``: a Keras 3 Sequential with one Dense(3) on 4 inputs (architecture=)."""
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3, "use_bias": True}}]}}
    (d / "config.json").write_text(json.dumps(config))


@item("item40_fuzz_weights_h5_member_name_not_utf8")
def _(d: Path) -> dict[str, Any]:
    # was: TypeError "'<' not supported between instances of 'str' and 'bytes'": h5py returns a
    # link name that is not UTF-8 as bytes
    import h5py

    _dense_config(d)
    path = d / "model.weights.h5"
    with h5py.File(path, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset(b"\xff1", data=np.ones(3, "f4"))
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True,
            "options": {"architecture": str(d / "config.json")}}


def _weights_h5_with_vars_name(d: Path, value: Any, dtype: Any) -> dict[str, Any]:
    import h5py

    _dense_config(d)
    path = d / "model.weights.h5"
    with h5py.File(path, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.attrs.create("name", value, dtype=dtype)
        v.create_dataset("0", data=np.ones((4, 3), "f4"))
        v.create_dataset("1", data=np.ones(3, "f4"))
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True,
            "match": "type class", "options": {"architecture": str(d / "config.json")}}


@item("item40_fuzz_weights_h5_vlen_sequence_attribute")
def _(d: Path) -> dict[str, Any]:
    # was: SIGSEGV in libhdf5 (H5VL_blob_put <- H5T__vlen_disk_write <- H5Aread) reading a vars
    # group's "name" attribute whose datatype a mutation turned into a damaged vlen sequence;
    # attributes are now read only when their type class is integer, float or string
    import h5py

    value = np.empty((), dtype=object)
    value[()] = np.arange(3, dtype="i4")
    return _weights_h5_with_vars_name(d, value, h5py.vlen_dtype(np.dtype("i4")))


@item("item40_fuzz_weights_h5_compound_attribute")
def _(d: Path) -> dict[str, Any]:
    dtype = np.dtype([("a", "i4"), ("b", "f8")])
    return _weights_h5_with_vars_name(d, np.zeros((), dtype), dtype)


@item("item40_fuzz_h5_keras_version_not_utf8")
def _(d: Path) -> dict[str, Any]:
    # was: read succeeded with the surrogates h5py decodes bad UTF-8 into, and writing the
    # spec then failed with PydanticSerializationError
    import h5py

    path = d / "model.h5"
    path.write_bytes(_legacy_h5(d))
    with h5py.File(path, "a") as f:
        f.attrs.create("keras_version", b"\xff\xfe2.1", dtype=h5py.string_dtype("utf-8"))
    return {"path": str(path), "op": "read", "expect": MAL, "c_parser": True, "match": "UTF-8"}


@item("item40_fuzz_pt_legacy_key_that_cannot_name_a_layer")
def _(d: Path) -> dict[str, Any]:
    # was: pydantic ValidationError from a state-dict key ("\x0b.bias", "0/weight") that cannot
    # be a layer name in the weights-only archive
    import torch

    path = d / "model.pt"
    torch.save({"\x0b.bias": torch.ones(2), "0/weight": torch.ones(2)}, path,
               _use_new_zipfile_serialization=False)
    return {"path": str(path), "op": "read", "expect": ["SpecValidationError"],
            "match": "cannot name a layer"}
