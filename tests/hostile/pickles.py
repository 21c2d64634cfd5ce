"""Hand-assembled ``torch.save`` files: pickles written opcode by opcode, zip and legacy layouts.

The battery's round-two items and the parity tests build PyTorch checkpoints that ``torch.save``
never writes (shared references, attributes set through BUILD, a storage declared with two dtypes,
flags on a tensor view) without PyTorch: the opcodes are those of pickle protocol 2, the layout is
the one ``torch/serialization.py`` writes.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class P:
    """A protocol-2 pickle, built opcode by opcode (methods chain)."""

    def __init__(self) -> None:
        self.b = bytearray(b"\x80\x02")

    def raw(self, data: bytes) -> P:
        self.b += data
        return self

    def glob(self, module: str, name: str) -> P:
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def text(self, value: str) -> P:
        data = value.encode("utf-8", "surrogatepass")
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def int(self, value: int) -> P:
        if 0 <= value < 256:
            return self.raw(b"K" + bytes([value]))
        if -(2**31) <= value < 2**31:
            return self.raw(b"J" + struct.pack("<i", value))
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return self.raw(b"\x8a" + bytes([len(data)]) + data)

    def false(self) -> P:
        return self.raw(b"\x89")

    def true(self) -> P:
        return self.raw(b"\x88")

    def none(self) -> P:
        return self.raw(b"N")

    def mark(self) -> P:
        return self.raw(b"(")

    def tuple(self) -> P:
        return self.raw(b"t")

    def empty_tuple(self) -> P:
        return self.raw(b")")

    def empty_list(self) -> P:
        return self.raw(b"]")

    def empty_dict(self) -> P:
        return self.raw(b"}")

    def append(self) -> P:
        return self.raw(b"a")

    def appends(self) -> P:
        return self.raw(b"e")

    def setitem(self) -> P:
        return self.raw(b"s")

    def setitems(self) -> P:
        return self.raw(b"u")

    def reduce(self) -> P:
        return self.raw(b"R")

    def build(self) -> P:
        return self.raw(b"b")

    def persid(self) -> P:
        return self.raw(b"Q")

    def put(self, index: int) -> P:
        return self.raw(b"r" + struct.pack("<I", index))

    def get(self, index: int) -> P:
        return self.raw(b"j" + struct.pack("<I", index))

    def ordered_dict(self) -> P:
        """``OrderedDict()`` as torch.save writes it (GLOBAL, empty args, REDUCE)."""
        return self.glob("collections", "OrderedDict").empty_tuple().reduce()

    def ints(self, values: tuple[int, ...]) -> P:
        self.mark()
        for v in values:
            self.int(v)
        return self.tuple()

    def tensor(self, key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], *,
               storage: str = "FloatStorage", offset: int = 0, requires_grad: bool = False,
               metadata: dict[str, bool] | None = None, pid_len: int = 5,
               location: str = "cpu") -> P:
        """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
        self.glob("torch._utils", "_rebuild_tensor_v2").mark()
        self.mark().text("storage").glob("torch", storage).text(key).text(location).int(numel)
        if pid_len == 6:
            self.none()
        self.tuple().persid()
        self.int(offset).ints(size).ints(stride)
        self.true() if requires_grad else self.false()
        self.ordered_dict()
        if metadata is not None:
            self.empty_dict().mark()
            for name, flag in metadata.items():
                self.text(name).true() if flag else self.text(name).false()
            self.setitems()
        return self.tuple().reduce()

    def done(self) -> bytes:
        return bytes(self.b + b".")


def state_dict(tensors: list[tuple[str, str, int]], *, pid_len: int = 5) -> bytes:
    """``OrderedDict`` of 1-D float tensors ``(name, storage key, numel)``: what torch.save writes."""
    p = P().ordered_dict().mark()
    for name, key, numel in tensors:
        p.text(name).tensor(key, numel, (numel,), (1,), pid_len=pid_len)
    return p.setitems().done()


def pt_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], *, prefix: str = "archive",
           version: bytes | None = b"3", byteorder: bytes | None = b"little",
           first: str | None = None) -> Path:
    """The ``torch.save`` zip layout: ``<prefix>/data.pkl``, ``byteorder``, ``data/<key>``, ``version``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        if first is not None:
            zf.writestr(first, b"")
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages.items():
            zf.writestr(f"{prefix}/data/{key}", data)
        if version is not None:
            zf.writestr(f"{prefix}/version", version + b"\n")
    return path


def pt_legacy(path: Path, obj_pickle: bytes, storages: list[tuple[str, bytes, int]], *,
              little_endian: bool = True) -> Path:
    """The pre-1.6 layout: magic, protocol, sys info, the object, the storage keys, then each
    storage as an 8-byte element count and its bytes (``(key, bytes, itemsize)``)."""
    head = b"".join(pickle.dumps(v, protocol=2) for v in (
        LEGACY_MAGIC, 1001,
        {"protocol_version": 1001, "little_endian": little_endian,
         "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    keys = pickle.dumps([key for key, _, _ in storages], protocol=2)
    body = b"".join(struct.pack("<Q", len(data) // size) + data for _, data, size in storages)
    path.write_bytes(head + obj_pickle + keys + body)
    return path


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def shared_lists(levels: int) -> Any:
    """A list reused at every level: ``levels`` objects, ``2**levels`` paths."""
    node: list[Any] = []
    for _ in range(levels):
        node = [node, node]
    return node
