"""Reading HDF5 datasets as data only: hard links, known dtypes, checked sizes, no external bytes.

HDF5 can point outside the file (external links, soft links, external raw storage, virtual
datasets) and can decode through plug-in filters. Keras weight files need none of that, so this
module walks groups only through hard links to names it has checked, and reads a dataset only if
its dtype, layout, filters and sizes are on an allowlist. Uncompressed contiguous datasets are
memory-mapped straight from the file (lazy, zero-copy); anything else is read into memory.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import (
    ExternalReferenceError,
    MalformedFileError,
    ResourceLimitError,
    UnsupportedDtypeError,
)
from weightio.format.limits import check_shape
from weightio.format.paths import open_regular
from weightio.spec.dtypes import numpy_dtype

#: HDF5 filters weightio lets h5py decode: deflate, shuffle, fletcher32, scale-offset, lzf.
ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 6: "scaleoffset", 32000: "lzf"}
#: Largest tensor weightio reads from HDF5.
MAX_TENSOR_BYTES = 1 << 40
#: A filtered dataset may expand at most this much beyond its stored size.
MAX_EXPANSION = 1000


def _raised_by_h5py(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside h5py (its Python layer or its Cython/C layer)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_code.co_filename
    return name.startswith("h5py/") or f"{os.sep}h5py{os.sep}" in name


@contextmanager
def hdf5_errors(file: Path, what: str = "the HDF5 file") -> Iterator[None]:
    """Turn what h5py raises on a damaged file into ``MalformedFileError``.

    A corrupt object header, B-tree, heap or type message surfaces from h5py as ``OSError``,
    ``RuntimeError``, ``KeyError``, ``TypeError``, ``ValueError``… from wherever the damaged
    structure is first touched (opening a group, listing links, reading an attribute's type).
    Only exceptions raised inside h5py are translated, so a bug in weightio's own code is not
    disguised as a bad file. ``MemoryError`` (HDF5 allocating what a header claims) becomes
    ``ResourceLimitError``.
    """
    from weightio.errors import WeightioError

    try:
        yield
    except WeightioError as exc:
        raise exc.with_file(file) from None
    except MemoryError:
        raise ResourceLimitError(
            f"{what} declares a structure larger than memory; it is corrupt or hostile", file=file
        ) from None
    except Exception as exc:
        if not _raised_by_h5py(exc) and not isinstance(exc, OSError):
            raise
        raise MalformedFileError(
            f"{what} is damaged ({type(exc).__name__}: {str(exc)[:200]}); it is truncated or "
            "corrupt, re-download or re-save it",
            file=file,
        ) from None


#: HDF5 type classes an attribute weightio reads may have: integer, float, string. Everything
#: else (vlen sequences, compound, reference, enum, array, opaque) is refused before h5py reads
#: it -- a damaged vlen sequence type crashes libhdf5 inside ``H5Aread`` (found by fuzzing).
_ATTRIBUTE_CLASSES = {0: "integer", 1: "float", 3: "string"}
#: Largest attribute weightio reads (Keras' model_config is a few KB to a few MB).
MAX_ATTRIBUTE_BYTES = 64 * 1024 * 1024


def attribute(node: Any, name: str, *, file: Path, layer: str | None = None) -> Any:
    """Attribute ``name`` of ``node`` (``None`` if absent), read only if its type is plain data.

    The datatype and dataspace are inspected through the low-level API first; only integers,
    floats and (fixed or variable length) strings with a simple or scalar dataspace of bounded
    size are handed to h5py to read.
    """
    import h5py

    encoded = name.encode()
    with hdf5_errors(file, f"attribute {name!r} of {getattr(node, 'name', '?')}"):
        if not h5py.h5a.exists(node.id, encoded):
            return None
        handle = h5py.h5a.open(node.id, encoded)
        datatype = handle.get_type()
        kind = datatype.get_class()
        space = handle.get_space()
        simple = space.get_simple_extent_type() in (h5py.h5s.SCALAR, h5py.h5s.SIMPLE)
        count = space.get_simple_extent_npoints() if simple else -1
        # stored size of fixed-size elements; a variable-length string's bytes live in the
        # file's global heap, which h5_heap has bounded by the file size
        size = count * datatype.get_size()
    if kind not in _ATTRIBUTE_CLASSES or not simple:
        raise MalformedFileError(
            f"attribute {name!r} of {getattr(node, 'name', '?')} has HDF5 type class {kind} "
            "(weightio reads only integer, float and string attributes); the file is damaged "
            "or was not written by Keras",
            file=file, layer=layer,
        )
    if size > MAX_ATTRIBUTE_BYTES:
        raise ResourceLimitError(
            f"attribute {name!r} of {getattr(node, 'name', '?')} is larger than "
            f"{MAX_ATTRIBUTE_BYTES} bytes", file=file, layer=layer,
        )
    with hdf5_errors(file, f"attribute {name!r} of {getattr(node, 'name', '?')}"):
        return node.attrs[name]


def check_name(name: str, *, file: Path, layer: str | None = None) -> str:
    """A group/dataset name from a file: one plain path component."""
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or name in (".", "..")
        or "\x00" in name
    ):
        raise MalformedFileError(
            f"HDF5 name {name!r} is not a plain name (no '/', '.', '..')", file=file, layer=layer
        )
    return name


def child(group: Any, name: str, *, file: Path, layer: str | None = None) -> Any:
    """``group[name]`` only through a hard link; None when absent."""
    import h5py

    check_name(name, file=file, layer=layer)
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        kind = type(link).__name__
        raise ExternalReferenceError(
            f"HDF5 entry {group.name}/{name} is a {kind}, not stored in the file; weightio "
            "follows no links",
            file=file,
            layer=layer,
        )
    return group[name]


def object_address(node: Any, *, file: Path) -> tuple[int, int]:
    """Where ``node``'s object header lives: ``(file number, address)``, the same for every
    hard link to it (the key ``GraphWalk`` remembers an HDF5 object by).
    """
    import h5py

    with hdf5_errors(file, f"the object header of {getattr(node, 'name', '?')}"):
        info = h5py.h5o.get_info(node.id)
        return int(info.fileno), int(info.addr)


def walk(group: Any, relative: str, *, file: Path, layer: str | None = None) -> Any:
    """Follow ``a/b/c`` below ``group``, each component checked and hard-linked."""
    if relative.startswith("/"):
        raise MalformedFileError(f"weight path {relative!r} is absolute", file=file, layer=layer)
    node = group
    for part in relative.split("/"):
        node = child(node, part, file=file, layer=layer) if node is not None else None
        if node is None:
            raise MalformedFileError(
                f"weight {relative!r} is missing from the file", file=file, layer=layer
            )
    return node


def _dtype(dataset: Any, *, bf16: bool, file: Path, layer: str | None) -> np.dtype:
    dt = dataset.dtype
    if dt.kind == "V" and dt.itemsize == 2 and dt.names is None and dt.subdtype is None:
        marked = attribute(dataset, "dtype", file=file, layer=layer)
        if isinstance(marked, bytes):
            marked = marked.decode("utf-8", "replace")
        if marked == "bfloat16" or bf16:
            return numpy_dtype("BF16")  # imports ml_dtypes (0.6 s) only for a bfloat16 file
    if dt.kind in "fiub" and dt.names is None and dt.subdtype is None and dt.itemsize in (1, 2, 4, 8):
        return dt
    raise UnsupportedDtypeError(
        f"dataset {dataset.name} has HDF5 type {dt} (compound, string, reference, opaque "
        "without a bfloat16 mark…), which is not a tensor dtype weightio reads",
        file=file,
        layer=layer,
    )


def read_dataset(
    dataset: Any, *, file: Path, layer: str | None, mapping: Any = None, base: int = 0,
    bf16: bool = False,
) -> np.ndarray:
    """Read one dataset after checking it; memory-mapped when contiguous and unfiltered.

    Args:
        mapping: An ``mmap`` of the bytes holding the HDF5 file, or None to read through h5py.
        base: Offset of the HDF5 file inside ``mapping`` (a member of a ``.keras`` zip).
        bf16: Treat an unmarked 2-byte opaque type as bfloat16 (legacy ``.h5`` from Keras 3,
            which writes bfloat16 without the mark, for a layer whose policy is bfloat16).
    """
    import h5py

    if dataset is None:
        raise MalformedFileError("a weight dataset is missing", file=file, layer=layer)
    if not isinstance(dataset, h5py.Dataset):
        raise MalformedFileError(f"{dataset.name} is not a dataset", file=file, layer=layer)
    if dataset.is_virtual:
        raise ExternalReferenceError(
            f"dataset {dataset.name} is virtual (its data lives in other files)", file=file,
            layer=layer,
        )
    if dataset.external:
        raise ExternalReferenceError(
            f"dataset {dataset.name} keeps its data in external files {dataset.external!r}",
            file=file,
            layer=layer,
        )
    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise MalformedFileError(
                f"dataset {dataset.name} uses HDF5 filter {code}, which weightio does not decode "
                f"(allowed: {', '.join(ALLOWED_FILTERS.values())})",
                file=file,
                layer=layer,
            )
    dtype = _dtype(dataset, bf16=bf16, file=file, layer=layer)
    shape = tuple(int(d) for d in dataset.shape) if dataset.shape is not None else None
    if shape is None:
        raise MalformedFileError(f"dataset {dataset.name} has no shape", file=file, layer=layer)
    check_shape(shape, dtype.itemsize, file=file, layer=layer)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise ResourceLimitError(
            f"dataset {dataset.name} declares {nbytes} bytes, over the {MAX_TENSOR_BYTES}-byte "
            "limit",
            file=file,
            layer=layer,
        )
    stored = int(dataset.id.get_storage_size())
    filtered = plist.get_nfilters() > 0
    if filtered and nbytes > max(1 << 20, MAX_EXPANSION * stored):
        raise ResourceLimitError(
            f"dataset {dataset.name} expands {stored} stored bytes to {nbytes}", file=file,
            layer=layer,
        )
    target = dtype  # the file's own byte order; the archive stores little-endian values
    offset = dataset.id.get_offset()
    if (
        mapping is not None
        and nbytes > 0
        and not filtered
        and plist.get_layout() == h5py.h5d.CONTIGUOUS
        and offset is not None
        and stored == nbytes
        and base + offset + nbytes <= len(mapping)
    ):
        array = np.frombuffer(mapping, dtype=target, count=math.prod(shape), offset=base + offset)
        return array.reshape(shape)
    bfloat = "ml_dtypes" in sys.modules and dtype == numpy_dtype("BF16")  # only _dtype makes one
    out = np.empty(shape, dtype="V2" if bfloat else dataset.dtype)
    if nbytes:
        dataset.read_direct(out)
    if bfloat:
        out = out.view(np.uint16).view(dtype)
    out.setflags(write=False)
    return out


def open_mapping(path: Path) -> mmap.mmap | None:
    """A read-only map of ``path`` (None for an empty file)."""
    with open_regular(path) as handle:
        size = handle.seek(0, 2)
        if not size:
            return None
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        from weightio.format.streaming import register_file_mapping

        register_file_mapping(mapping, handle.fileno())  # lets a streamed write copy in-kernel
        return mapping
