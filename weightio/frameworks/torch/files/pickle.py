"""PyTorch checkpoints (``.pt``/``.pth``/``.bin``) without PyTorch: a data-only unpickler.

``torch.save`` writes a zip (``<name>/data.pkl`` plus one member per storage, ``<name>/data/<key>``,
stored uncompressed and 64-byte aligned) or, before torch 1.6, a bare sequence of pickles followed
by the raw storages. The pickles run on ``opcodes.run_pickle``, which executes exactly the opcodes
``torch.load(weights_only=True)`` executes. They name a handful of globals to rebuild tensors; the
allowlist here knows exactly those (tensor rebuild functions with torch's own signatures, storage
types, dtypes, ``OrderedDict``) and answers each with a function of its own, so no module named
in a file is ever imported and nothing else is called. Any other global is refused with
``UnsafeFormatError`` naming it. Everything that would make torch read the file differently is
refused too: state set through ``BUILD`` (beyond a state dict's ``_metadata``), negated or
conjugated views, a storage declared twice with different dtypes, big-endian legacy files (torch
ignores their flag), files that are a legacy pickle and a zip or tar at once.

The unpickled objects are then walked once each (``weightio.format.graph``): shared references
stay shared, cycles are refused, depth and object count are bounded. Storages become numpy views
memory-mapped from the file, so reading is lazy: bytes are touched when a tensor is written or
compared, and ``weightio.format.streaming.release`` gives the pages back.

Every number the pickle states (offsets, sizes, strides, element counts) is checked with Python
ints against the member it points into before any view is made, and a view that claims more
than its storage holds (stride 0) is bounded by ``format.limits.check_view``.
"""


from __future__ import annotations

import mmap
import os
import re
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import (
    MalformedFileError,
    ResourceLimitError,
    UnsafeFormatError,
    received,
)
from weightio.format.archive import Archive
from weightio.format.graph import GraphWalk
from weightio.format.paths import open_regular
from weightio.format.zip import ZIP_ERRORS, is_zip, member_offset, read_member
from weightio.frameworks.torch.files.checkpoints import check_torch_path, pick_state_dict
from weightio.frameworks.torch.files.rebuild import (
    MAX_PICKLE_BYTES,
    Frozen,
    Pending,
    Storage,
    Storages,
    load_pickle,
    storage_pid,
)

#: A compressed member may expand at most this much (zip bombs).
MAX_COMPRESSION_RATIO = 200


class _ZipCheckpoint:
    """The zip layout as torch reads it: records under the first member's folder, one
    ``data.pkl``, storages mapped lazily.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open_regular(path)
        try:
            self.zip = zipfile.ZipFile(self._handle)
        except ZIP_ERRORS as exc:
            self._handle.close()
            raise MalformedFileError(f"unreadable zip ({exc})", file=path) from None
        try:
            self._index(path)
        except BaseException:
            self.zip.close()
            self._handle.close()
            raise

    def _index(self, path: Path) -> None:
        infos = self.zip.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise MalformedFileError("the zip holds duplicate member names", file=path)
        if any(n.endswith(("constants.pkl", "/code/")) or "/code/" in n for n in names):
            raise UnsafeFormatError(
                "is a TorchScript archive (torch.jit.save), which holds code; weightio reads "
                "state dicts only. Save model.state_dict() with torch.save instead",
                file=path,
            )
        # torch's reader takes the folder of the zip's first member as the archive's name and
        # looks every record up under it; a data.pkl elsewhere is invisible to torch.load
        first = names[0] if names else ""
        if "/" not in first:
            raise MalformedFileError(
                f"the zip's first member {first[:100]!r} is not in a folder; torch.save puts "
                "every record under '<name>/'", file=path,
            )
        self.prefix = first[: first.index("/") + 1]
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if pickles != [f"{self.prefix}data.pkl"]:
            raise MalformedFileError(
                f"expected one data.pkl, under the first member's folder {self.prefix!r}; found "
                f"{pickles[:5]}", file=path,
            )
        self.infos = {i.filename: i for i in infos}
        version = self.infos.get(f"{self.prefix}.data/version") or self.infos.get(
            f"{self.prefix}version")
        if version is None or not re.fullmatch(rb"\s*[0-9]{1,9}\s*", self._small(version, 64)):
            raise MalformedFileError(
                "the zip has no readable 'version' record, which torch.load requires", file=path
            )
        order = self.infos.get(f"{self.prefix}byteorder")
        byteorder = self._small(order, 64) if order is not None else b"little"
        if byteorder not in (b"little", b"big"):
            raise MalformedFileError(f"unknown byte order {byteorder[:20]!r}", file=path)
        self.big_endian = byteorder == b"big"
        self._map: mmap.mmap | None = None
        self.storages = Storages(path, self._attach)

    def _small(self, info: zipfile.ZipInfo, limit: int = MAX_PICKLE_BYTES) -> bytes:
        if info.file_size > limit:
            raise ResourceLimitError(
                f"member {info.filename!r} declares {info.file_size} bytes, over the "
                f"{limit}-byte limit",
                file=self.path,
            )
        self._check_ratio(info)
        return read_member(self.zip, info, self.path)

    def _check_ratio(self, info: zipfile.ZipInfo) -> None:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(
            1 << 20, MAX_COMPRESSION_RATIO * info.compress_size
        ):
            raise ResourceLimitError(
                f"member {info.filename!r} expands {info.compress_size} bytes to "
                f"{info.file_size} (a zip bomb?)",
                file=self.path,
            )

    def _attach(self, storage: Storage) -> None:
        key = storage.key
        info = self.infos.get(f"{self.prefix}data/{key}")
        if info is None:
            raise MalformedFileError(f"storage {key!r} has no member in the zip", file=self.path)
        dtype = storage.dtype.newbyteorder(">") if self.big_endian else storage.dtype
        storage.dtype = dtype
        nbytes = storage.numel * dtype.itemsize
        if info.file_size != nbytes:
            raise MalformedFileError(
                f"storage {key!r} declares {storage.numel} x {dtype} = {nbytes} bytes, its member "
                f"holds {info.file_size}",
                file=self.path,
            )
        if nbytes == 0:
            storage.array = np.empty(0, dtype=dtype)
        elif info.compress_type == zipfile.ZIP_STORED:
            start = member_offset(self._handle, info, self.path)
            if start + nbytes > os.fstat(self._handle.fileno()).st_size:
                raise MalformedFileError(f"storage {key!r} runs past the end of the file",
                                         file=self.path)
            storage.array = np.frombuffer(self._mapping(), dtype=dtype, count=storage.numel,
                                          offset=start)
        else:
            self._check_ratio(info)
            storage.array = np.frombuffer(read_member(self.zip, info, self.path), dtype=dtype)

    def _persistent_load(self, pid: Any) -> Storage:
        key, dtype, numel = storage_pid(pid, self.path, 5)
        return self.storages.declare(key, dtype, numel)

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ)
            from weightio.format.streaming import register_file_mapping

            register_file_mapping(self._map, self._handle.fileno())
        return self._map

    def load(self) -> Any:
        """Unpickle ``data.pkl``; the file is closed after (mapped storages stay valid)."""
        try:
            data = self._small(self.infos[f"{self.prefix}data.pkl"])
            return load_pickle(data, 0, len(data), self.path, self._persistent_load)[0]
        finally:
            self.zip.close()
            self._handle.close()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _no_storages(path: Path) -> Callable[[Any], Any]:
    def refuse(pid: Any) -> Any:
        raise MalformedFileError("storage reference outside the main pickle", file=path)

    return refuse


def _refuse_polyglot(path: Path, mapping: Any) -> None:
    """A legacy pickle that is also a tar or a zip: torch.load would read it as that instead."""
    if len(mapping) >= 512:
        try:
            tarfile.TarInfo.frombuf(bytes(mapping[:512]), "utf-8", "surrogateescape")
        except (tarfile.HeaderError, ValueError, UnicodeError):
            pass
        else:
            raise MalformedFileError(
                "is a legacy torch pickle and a tar archive at once; torch.load tries the tar "
                "format first, so the two readings differ. Re-save it with torch.save", file=path,
            )
    if is_zip(path):
        raise MalformedFileError(
            "is a legacy torch pickle with a zip archive appended; zip readers and torch.load "
            "would read different things. Re-save it with torch.save", file=path,
        )


def _load_legacy(path: Path) -> Any:
    """The pre-1.6 format: magic, protocol, sys info, the object, storage keys, raw storages."""
    storages = Storages(path)

    def storage_for(pid: Any) -> Storage:
        key, dtype, numel = storage_pid(pid, path, 6)
        return storages.declare(key, dtype, numel)

    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise MalformedFileError("the file is empty", file=path)
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        from weightio.format.streaming import register_file_mapping

        register_file_mapping(mapping, handle.fileno())  # storages are copied file to file
    _refuse_polyglot(path, mapping)
    refuse = _no_storages(path)
    magic, offset = load_pickle(mapping, 0, size, path, refuse)
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise MalformedFileError("not a PyTorch file (bad magic number)", file=path)
    protocol, offset = load_pickle(mapping, offset, size, path, refuse)
    if type(protocol) is not int or protocol != 1001:
        raise MalformedFileError("unknown legacy PyTorch protocol version", file=path)
    info, offset = load_pickle(mapping, offset, size, path, refuse)
    if isinstance(info, dict) and info.get("little_endian", True) is not True:
        raise MalformedFileError(
            "was written on a big-endian machine; torch.load ignores that and reads the bytes "
            "as little-endian, so torch's numbers and the intended ones differ. Re-save it with "
            "torch.save on a little-endian machine", file=path,
        )
    obj, offset = load_pickle(mapping, offset, size, path, storage_for)
    keys, offset = load_pickle(mapping, offset, size, path, refuse)
    if (type(keys) is not list or not all(type(k) is str for k in keys)
            or set(keys) != set(storages.by_key) or len(keys) != len(storages.by_key)):
        raise MalformedFileError("the storage list does not match the pickle", file=path)
    for key in keys:
        storage = storages.by_key[key]
        dtype = storage.dtype
        if offset + 8 > size:
            raise MalformedFileError(f"storage {key!r} is cut off", file=path)
        count = int.from_bytes(mapping[offset : offset + 8], "little")
        nbytes = count * dtype.itemsize
        if count != storage.numel or offset + 8 + nbytes > size:
            raise MalformedFileError(
                f"storage {key!r} declares {count} elements (pickle: {storage.numel}) in "
                f"{size - offset - 8} remaining bytes",
                file=path,
            )
        storage.array = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset + 8)
        offset += 8 + nbytes
    return obj


def _container_kind(path: Path) -> str:
    """``zip`` or ``legacy``, decided as torch.load decides it: by the first bytes."""
    with open_regular(path) as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":
        if not is_zip(path):
            raise MalformedFileError("starts like a zip archive but is not a readable one",
                                     file=path)
        return "zip"
    if head[:1] == b"\x80":
        return "legacy"
    raise MalformedFileError(
        "is neither a torch.save zip archive nor a legacy torch pickle; is it a .pt file?",
        file=path,
    )


def load_checkpoint(path: Path) -> Any:
    """Unpickle a ``torch.save`` file into plain containers of read-only numpy arrays."""
    if _container_kind(path) == "zip":
        obj = _ZipCheckpoint(path).load()
    else:
        obj = _load_legacy(path)
    return _materialize(obj, path)


def _materialize(obj: Any, path: Path) -> Any:
    """The unpickled graph with tensors as arrays: each object walked once (``GraphWalk``).

    A shared list stays shared in the result, so a file of 40 levels of one reused list costs
    40 steps, not 2**40; a container that holds itself is refused.
    """
    walk = GraphWalk(file=path, what="pickled object")

    def convert(value: Any, where: str, key: str | None = None) -> Any:
        if isinstance(value, Pending):
            return walk.visit(id(value), where, lambda: value.materialize(path, key))
        kind = type(value)
        if kind in (dict, OrderedDict):
            return walk.visit(id(value), where, lambda: kind(
                (k, convert(v, f"{where}[{received(k, 40)}]", k if isinstance(k, str) else None))
                for k, v in value.items()))
        if kind in (list, tuple):
            return walk.visit(id(value), where, lambda: kind(
                convert(v, f"{where}[{i}]") for i, v in enumerate(value)))
        if kind is set and not any(isinstance(v, Frozen) for v in value):
            return value
        if isinstance(value, Frozen):
            raise MalformedFileError(
                f"{where} is a bare {kind.__name__.lstrip('_')} where data belongs", file=path
            )
        return value

    return convert(obj, "the top-level object")


def _pick(obj: Any, path: Path, key: str | None) -> tuple[Mapping[str, np.ndarray], str | None]:
    """The state dict in the file (see ``weightio.frameworks.torch.files.checkpoints``)."""
    return pick_state_dict(obj, path, key, is_tensor=lambda v: isinstance(v, np.ndarray))


def read_checkpoint(path: os.PathLike[str] | str, *, key: str | None = None) -> Archive:
    """Read a ``torch.save`` state dict into a weights-only archive without importing torch.

    Same archive, tensor for tensor and bit for bit, as ``weightio.frameworks.torch.files.state_dict.read_torch_file``
    (which goes through ``torch.load(weights_only=True)``).

    Raises:
        UnsafeFormatError: the pickle names a global outside the tensor allowlist (named), or it is
            a TorchScript archive.
        UnsupportedTensorError: quantized, sparse, meta or subclass tensors.
        MalformedFileError: unreadable, inconsistent, or not a state dict (usable keys listed).
    """
    from weightio.format.provenance import provenance
    from weightio.format.weights_only import archive_from_state_dict

    path = Path(path)
    check_torch_path(path)
    state_dict, entry = _pick(load_checkpoint(path), path, key)
    return archive_from_state_dict(
        state_dict,
        name=path.stem or "state_dict",
        provenance=provenance("torch", framework_version=None, source_class=None,
                              source_file=path, source_key=entry),
    )
