"""PyTorch checkpoints (``.pt``/``.pth``/``.bin``) without PyTorch: a data-only unpickler.

``torch.save`` writes a zip (``<name>/data.pkl`` plus one member per storage, ``<name>/data/<key>``,
stored uncompressed and 64-byte aligned) or, before torch 1.6, a bare sequence of pickles followed
by the raw storages. The pickle names a handful of globals to rebuild tensors; this unpickler's
``find_class`` knows exactly those (an allowlist: tensor rebuild functions, storage types, dtypes,
``OrderedDict``) and answers each with a function of its own, so no module named in a file is ever
imported and nothing else is called. Any other global is refused with ``UnsafeFormatError`` naming
it. Storages become numpy views memory-mapped from the file, so reading is lazy: bytes are touched
when a tensor is written or compared, and ``weightio.streaming.release`` gives the pages back.

Every number the pickle states (offsets, sizes, strides, element counts) is checked with Python
ints against the member it points into before any view is made.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from weightio.adapters.zip_members import ZIP_ERRORS, is_zip, read_member
from weightio.archive import Archive
from weightio.checkpoints import pick_state_dict
from weightio.errors import (
    MalformedFileError,
    ResourceLimitError,
    UnsafeFormatError,
    UnsupportedTensorError,
    WeightioError,
)
from weightio.shapes import check_shape

#: Largest pickle (the structure, not the tensor data) weightio reads.
MAX_PICKLE_BYTES = 256 * 1024 * 1024
#: A compressed member may expand at most this much (zip bombs).
MAX_COMPRESSION_RATIO = 200

_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "half": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype("<f4"),
    "float": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "double": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "short": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "long": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype("<c8"),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "float8_e8m0fnu": np.dtype(ml_dtypes.float8_e8m0fnu),
}

#: Legacy typed storage classes (``torch.FloatStorage``…) -> element dtype.
_STORAGES: dict[str, np.dtype] = {
    "FloatStorage": _DTYPES["float32"],
    "DoubleStorage": _DTYPES["float64"],
    "HalfStorage": _DTYPES["float16"],
    "BFloat16Storage": _DTYPES["bfloat16"],
    "LongStorage": _DTYPES["int64"],
    "IntStorage": _DTYPES["int32"],
    "ShortStorage": _DTYPES["int16"],
    "CharStorage": _DTYPES["int8"],
    "ByteStorage": _DTYPES["uint8"],
    "BoolStorage": _DTYPES["bool"],
    "ComplexFloatStorage": _DTYPES["complex64"],
}

#: Globals that mean "a tensor weightio cannot store bit-exact", for a clearer refusal.
_UNSTORABLE = {
    "_rebuild_qtensor": "a quantized tensor",
    "_rebuild_sparse_tensor": "a sparse tensor",
    "_rebuild_sparse_csr_tensor": "a sparse tensor",
    "_rebuild_meta_tensor_no_storage": "a meta tensor (no values)",
    "_rebuild_wrapper_subclass": "a tensor subclass",
    "_rebuild_from_type_v2": "a tensor subclass",
    "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_device_tensor_from_numpy": "a device tensor",
}

_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


class _Frozen:
    """Objects this unpickler hands out refuse pickle's BUILD (``__setstate__``)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise MalformedFileError("the pickle tries to set state on a tensor part")


class _StorageType(_Frozen):
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, dtype


class _DType(_Frozen):
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, dtype


class _Storage(_Frozen):
    """One storage: its element dtype and count; ``array`` is attached once its bytes are known."""

    __slots__ = ("array", "dtype", "key", "numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class _Pending(_Frozen):
    """A tensor as the pickle describes it, turned into an array view by ``materialize``."""

    __slots__ = ("dtype", "offset", "shape", "storage", "strides")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...],
                 strides: tuple[int, ...], dtype: np.dtype) -> None:
        self.storage, self.offset, self.shape, self.strides, self.dtype = (
            storage, offset, shape, strides, dtype,
        )

    def materialize(self, file: Path) -> np.ndarray:
        storage = self.storage
        base = storage.array
        if base is None:
            raise MalformedFileError(f"storage {storage.key!r} has no data", file=file)
        if self.dtype != storage.dtype:  # an untyped (byte) storage viewed as ``dtype``
            if len(base) % self.dtype.itemsize:
                raise MalformedFileError(
                    f"storage {storage.key!r} of {len(base)} bytes does not hold whole "
                    f"{self.dtype} elements",
                    file=file,
                )
            base = base.view(self.dtype)
        count = len(base)
        check_shape(self.shape, base.itemsize, file=file, tensor=storage.key)
        if any(n == 0 for n in self.shape):
            if self.offset > count:
                raise MalformedFileError("tensor offset lies past its storage", file=file)
            return np.empty(self.shape, dtype=base.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        if last >= count:
            raise MalformedFileError(
                f"tensor of shape {list(self.shape)}, strides {list(self.strides)} at offset "
                f"{self.offset} reaches element {last} of a {count}-element storage",
                file=file,
            )
        item = base.itemsize
        contiguous = all(
            s == int(np.prod(self.shape[i + 1 :], dtype=object))
            for i, s in enumerate(self.strides)
            if self.shape[i] != 1
        )
        if contiguous:
            size = int(np.prod(self.shape, dtype=object))
            return base[self.offset : self.offset + size].reshape(self.shape)
        return np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.strides),
            writeable=False,
        )


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        type(v) is int and v >= 0 for v in value
    ):
        raise MalformedFileError(f"tensor {what} must be non-negative integers. Received: {value!r}")
    return tuple(value)


def _hooks_empty(hooks: Any) -> None:
    if hooks:
        raise UnsafeFormatError("the tensor carries backward hooks (code); weightio refuses them")


def _rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                hooks: Any = None, metadata: Any = None) -> _Pending:
    if not isinstance(storage, _Storage) or type(offset) is not int or offset < 0:
        raise MalformedFileError("a tensor is rebuilt from something that is not a storage")
    shape, strides = _ints(size, "sizes"), _ints(stride, "strides")
    if len(shape) != len(strides):
        raise MalformedFileError(f"tensor has {len(shape)} sizes but {len(strides)} strides")
    _hooks_empty(hooks)
    return _Pending(storage, offset, shape, strides, storage.dtype)


def _rebuild_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                hooks: Any, dtype: Any, metadata: Any = None) -> _Pending:
    pending = _rebuild_v2(storage, offset, size, stride, requires_grad, hooks, metadata)
    if not isinstance(dtype, _DType):
        raise MalformedFileError(f"tensor dtype is not a torch dtype. Received: {dtype!r}")
    pending.dtype = dtype.dtype
    return pending


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None,
                       state: Any = None) -> Any:
    _hooks_empty(hooks)
    if state:
        raise UnsafeFormatError("the parameter carries extra Python state; weightio refuses it")
    if not isinstance(data, _Pending):
        raise MalformedFileError("a parameter wraps something that is not a tensor")
    return data


_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    """Resolves only allowlisted globals, to objects of its own; storages via ``storage_for``."""

    def __init__(self, data: io.BytesIO | Any, file: Path, storage_for: Callable[..., _Storage]):
        super().__init__(data)
        self._file = file
        self._storage_for = storage_for

    def find_class(self, module: str, name: str) -> Any:
        fn = _FUNCTIONS.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name in _STORAGES:
            return _StorageType(name, _STORAGES[name])
        if (module, name) == ("torch.storage", "UntypedStorage") or (module, name) == (
            "torch", "UntypedStorage",
        ):
            return _StorageType(name, np.dtype("u1"))
        if module == "torch" and name in _DTYPES:
            return _DType(name, _DTYPES[name])
        what = _UNSTORABLE.get(name) if module.startswith("torch") else None
        if what is not None:
            raise UnsupportedTensorError(
                f"holds {what} ({module}.{name}); weightio stores plain dense tensors only. "
                "Convert it to a dense float tensor before saving",
                file=self._file,
            )
        raise UnsafeFormatError(
            f"the pickle names the global {module}.{name}, which is not a tensor or plain "
            "container; unpickling it could run code, so weightio refuses it. Re-save the weights "
            "from trusted code with torch.save(model.state_dict(), path)",
            file=self._file,
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if (
            not isinstance(pid, tuple)
            or len(pid) not in (5, 6)
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str)
            or not _KEY.fullmatch(pid[2])
            or pid[2] in (".", "..")
            or type(pid[4]) is not int
            or pid[4] < 0
        ):
            raise MalformedFileError(f"unreadable storage reference {str(pid)[:200]}", file=self._file)
        if len(pid) == 6 and pid[5] is not None:
            raise UnsupportedTensorError("holds a legacy storage view; re-save with torch >= 1.6",
                                         file=self._file)
        return self._storage_for(pid[2], pid[1].dtype, pid[4])


def _load_pickle(data: Any, file: Path, storage_for: Callable[..., _Storage]) -> Any:
    try:
        return _Unpickler(data, file, storage_for).load()
    except WeightioError as exc:
        raise exc.with_file(file) from None
    except MemoryError:
        raise ResourceLimitError(
            "the pickle declares an object larger than memory; the file is corrupt or hostile",
            file=file,
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RecursionError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise MalformedFileError(
            f"the pickle is unreadable ({type(exc).__name__}: {str(exc)[:200]}); the file is "
            "truncated or not a PyTorch file",
            file=file,
        ) from None


def _member_offset(handle: Any, info: zipfile.ZipInfo, file: Path) -> int:
    """Byte offset of a stored member's data, from its local header."""
    try:
        handle.seek(info.header_offset)
        local = handle.read(30)
    except (OSError, ValueError, OverflowError):
        local = b""
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise MalformedFileError(f"zip member {info.filename!r} has no local header", file=file)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


class _ZipCheckpoint:
    """The zip layout: checked member names, one ``data.pkl``, storages mapped lazily."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "rb")
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
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if any(n.endswith(("constants.pkl", "/code/")) or "/code/" in n for n in names):
            raise UnsafeFormatError(
                "is a TorchScript archive (torch.jit.save), which holds code; weightio reads "
                "state dicts only. Save model.state_dict() with torch.save instead",
                file=path,
            )
        if len(pickles) != 1:
            raise MalformedFileError(
                f"expected one '<name>/data.pkl' member, found {len(pickles)}", file=path
            )
        self.prefix = pickles[0][: -len("data.pkl")]
        self.infos = {i.filename: i for i in infos}
        order = self.infos.get(f"{self.prefix}byteorder")
        self.big_endian = order is not None and self._small(order) == b"big"
        self._map: mmap.mmap | None = None
        self.storages: dict[str, _Storage] = {}

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

    def storage(self, key: str, dtype: np.dtype, numel: int) -> _Storage:
        found = self.storages.get(key)
        if found is not None:
            if found.dtype != dtype or found.numel != numel:
                raise MalformedFileError(f"storage {key!r} is declared twice, differently",
                                         file=self.path)
            return found
        info = self.infos.get(f"{self.prefix}data/{key}")
        if info is None:
            raise MalformedFileError(f"storage {key!r} has no member in the zip", file=self.path)
        if self.big_endian:
            dtype = dtype.newbyteorder(">")
        nbytes = numel * dtype.itemsize
        if info.file_size != nbytes:
            raise MalformedFileError(
                f"storage {key!r} declares {numel} x {dtype} = {nbytes} bytes, its member holds "
                f"{info.file_size}",
                file=self.path,
            )
        storage = _Storage(key, dtype, numel)
        if nbytes == 0:
            storage.array = np.empty(0, dtype=dtype)
        elif info.compress_type == zipfile.ZIP_STORED:
            start = _member_offset(self._handle, info, self.path)
            if start + nbytes > os.fstat(self._handle.fileno()).st_size:
                raise MalformedFileError(f"storage {key!r} runs past the end of the file",
                                         file=self.path)
            storage.array = np.frombuffer(self._mapping(), dtype=dtype, count=numel, offset=start)
        else:
            self._check_ratio(info)
            storage.array = np.frombuffer(read_member(self.zip, info, self.path), dtype=dtype)
        self.storages[key] = storage
        return storage

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ)
            from weightio.streaming import register_file_mapping

            register_file_mapping(self._map, self._handle.fileno())
        return self._map

    def load(self) -> Any:
        """Unpickle ``data.pkl``; the file is closed after (mapped storages stay valid)."""
        try:
            data = self._small(self.infos[f"{self.prefix}data.pkl"])
            return _load_pickle(io.BytesIO(data), self.path, self.storage)
        finally:
            self.zip.close()
            self._handle.close()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _ClampedReader:
    """A file the unpickler reads from, whose ``read(n)`` never asks for more than is left.

    CPython's unpickler reads a length-prefixed object (``BINBYTES8``, ``BINUNICODE8``...) with
    one ``read(n)`` of the length the pickle states, and a buffered file allocates ``n`` bytes
    before reading: a 100-byte file claiming 2**40 bytes would ask for a terabyte. Clamped, the
    read returns what the file holds and the unpickler reports the pickle as truncated.
    """

    def __init__(self, handle: Any, size: int) -> None:
        self._handle = handle
        self._size = size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._handle.tell())
        return self._handle.read(left if n is None or n < 0 or n > left else n)

    def readline(self, limit: int = -1) -> bytes:
        return self._handle.readline(limit)

    def readinto(self, buffer: Any) -> int:
        return self._handle.readinto(buffer)


def _load_legacy(path: Path) -> Any:
    """The pre-1.6 format: magic, protocol, sys info, the object, storage keys, raw storages."""
    storages: dict[str, _Storage] = {}

    def storage_for(key: str, dtype: np.dtype, numel: int) -> _Storage:
        if key not in storages:
            storages[key] = _Storage(key, dtype, numel)
        return storages[key]

    def no_storages(*_: Any) -> _Storage:
        raise MalformedFileError("storage reference outside the main pickle", file=path)

    size = path.stat().st_size
    with open(path, "rb") as handle:
        pickles = _ClampedReader(handle, size)
        if _load_pickle(pickles, path, no_storages) != _LEGACY_MAGIC:
            raise MalformedFileError("not a PyTorch file (bad magic number)", file=path)
        if _load_pickle(pickles, path, no_storages) != 1001:
            raise MalformedFileError("unknown legacy PyTorch protocol version", file=path)
        info = _load_pickle(pickles, path, no_storages)
        little = not isinstance(info, dict) or info.get("little_endian", True)
        obj = _load_pickle(pickles, path, storage_for)
        keys = _load_pickle(pickles, path, no_storages)
        if not isinstance(keys, list) or set(keys) != set(storages) or len(keys) != len(storages):
            raise MalformedFileError("the storage list does not match the pickle", file=path)
        offset = handle.tell()
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if mapping is not None:  # storages are copied file to file by a streamed write
            from weightio.streaming import register_file_mapping

            register_file_mapping(mapping, handle.fileno())
    for key in keys:
        storage = storages[key]
        dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
        if offset + 8 > size:
            raise MalformedFileError(f"storage {key!r} is cut off", file=path)
        count = int.from_bytes(mapping[offset : offset + 8], "little" if little else "big")
        nbytes = count * dtype.itemsize
        if count != storage.numel or offset + 8 + nbytes > size:
            raise MalformedFileError(
                f"storage {key!r} declares {count} elements (pickle: {storage.numel}) in "
                f"{size - offset - 8} remaining bytes",
                file=path,
            )
        storage.dtype = dtype
        storage.array = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset + 8)
        offset += 8 + nbytes
    return obj


def load_checkpoint(path: Path) -> Any:
    """Unpickle a ``torch.save`` file into plain containers of read-only numpy arrays."""
    if is_zip(path):
        obj = _ZipCheckpoint(path).load()
    else:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:1] != b"\x80":
            raise MalformedFileError(
                "is neither a torch.save zip archive nor a legacy torch pickle; is it a .pt file?",
                file=path,
            )
        obj = _load_legacy(path)
    return _materialize(obj, path)


def _materialize(obj: Any, path: Path) -> Any:
    if isinstance(obj, _Pending):
        return obj.materialize(path)
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v, path)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, path) for v in obj)
    return obj


def _pick(obj: Any, path: Path, key: str | None) -> Mapping[str, np.ndarray]:
    """The state dict in the file (see ``weightio.checkpoints``)."""
    return pick_state_dict(obj, path, key, is_tensor=lambda v: isinstance(v, np.ndarray))


def read_checkpoint(path: os.PathLike[str] | str, *, key: str | None = None) -> Archive:
    """Read a ``torch.save`` state dict into a weights-only archive without importing torch.

    Same archive, tensor for tensor and bit for bit, as ``weightio.adapters.torch.read_torch_file``
    (which goes through ``torch.load(weights_only=True)``).

    Raises:
        UnsafeFormatError: the pickle names a global outside the tensor allowlist (named), or it is
            a TorchScript archive.
        UnsupportedTensorError: quantized, sparse, meta or subclass tensors.
        MalformedFileError: unreadable, inconsistent, or not a state dict (usable keys listed).
    """
    from weightio.adapters.common import provenance
    from weightio.adapters.torch_files import _check_path
    from weightio.weights_only import archive_from_state_dict

    path = Path(path)
    _check_path(path)
    state_dict = _pick(load_checkpoint(path), path, key)
    return archive_from_state_dict(
        state_dict,
        name=path.stem or "state_dict",
        provenance=provenance("torch", framework_version=None, source_class=None,
                              source_file=path),
    )
