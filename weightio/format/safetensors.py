"""Reading and writing the safetensors container, checked by us before anything is allocated.

The format: 8 bytes little-endian header length N, N bytes of UTF-8 JSON (an object mapping tensor
names to ``{dtype, shape, data_offsets}`` plus an optional ``__metadata__`` of string pairs), then
the tensor bytes. We parse it ourselves rather than through the safetensors library so that every
number is checked with Python ints first, errors are ours and typed, bf16/f8 map to ``ml_dtypes``,
and writing can stream tensor by tensor through the atomic writer.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from weightio.errors import MalformedFileError, ResourceLimitError, UnsupportedDtypeError, received
from weightio.format.limits import check_shape
from weightio.spec.dtypes import as_little_endian, dtype_name, numpy_dtype, tensor_bytes
from weightio.spec.dtypes import itemsize as dtype_itemsize
from weightio.spec.json_limits import parse_json

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np  # imported where arrays are made: reading a header needs no numpy

#: Largest header weightio will read (the safetensors library uses the same bound).
MAX_HEADER_BYTES = 100 * 1024 * 1024
_ALIGN = 8


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it; offsets are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed, checked safetensors header."""

    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int
    file_size: int


#: Memory a header may take to parse, as a multiple of its size (plus ``HEADER_PARSE_SLACK``).
MAX_HEADER_PARSE_FACTOR = 10
HEADER_PARSE_SLACK = 64 * 1024 * 1024


def parse_cost(raw: bytes) -> int:
    """An upper bound on the memory ``json.loads`` takes for ``raw``, counted before parsing.

    Python objects are far larger than the JSON bytes that make them: ``[]`` (2 bytes) is a
    72-byte list, a one-digit float a 24-byte object and an 8-byte slot. A 100 MiB header of
    ``[[],[],…]`` would take gigabytes, so the structural bytes are counted first (a few passes
    of ``bytes.count``, no allocation) and priced at the size of what each makes, plus the
    decoded text and a copy of its strings (at 4 bytes a character if any character needs it).
    Characters inside strings count too: an overestimate there is the nested spec JSON, which is
    parsed next anyway.
    """
    width = 4 if re.search(rb"[\xf0-\xf4]", raw) else 2 if re.search(rb"[\xc4-\xef]", raw) else 1
    return (2 * width * len(raw) + 80 * raw.count(b"{") + 72 * raw.count(b"[")
            + 32 * raw.count(b'"') + 40 * raw.count(b","))


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(handle: BinaryIO, file: Path) -> Header:
    """Read and check the header of an open safetensors file."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    if size < 8:
        raise MalformedFileError(
            f"file is {size} bytes, too short for a safetensors header", file=file
        )
    length = int.from_bytes(handle.read(8), "little")
    if length > MAX_HEADER_BYTES:
        if length > size - 8:
            raise MalformedFileError(
                f"header claims {length} bytes but the file has {size - 8} after the length",
                file=file,
            )
        raise ResourceLimitError(
            f"header of {length} bytes exceeds the {MAX_HEADER_BYTES}-byte limit", file=file
        )
    if length > size - 8 or length < 2:
        raise MalformedFileError(
            f"header claims {length} bytes but the file has {size - 8} after the length",
            file=file,
        )
    raw = handle.read(length)
    cost = parse_cost(raw)
    if cost > MAX_HEADER_PARSE_FACTOR * length + HEADER_PARSE_SLACK:
        raise ResourceLimitError(
            f"the {length:,}-byte header would take about {cost >> 20:,} MiB to parse (it holds "
            f"{raw.count(b'{') + raw.count(b'['):,} objects and lists and "
            f"{raw.count(b','):,} values); weightio parses a header within "
            f"{MAX_HEADER_PARSE_FACTOR}x its size. The file is corrupt or hostile",
            file=file,
        )
    data = parse_json(raw, file=file, what="the header", limits=False)
    if not isinstance(data, dict):
        raise MalformedFileError("header must be a JSON object", file=file)

    metadata = data.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise MalformedFileError("__metadata__ must map strings to strings", file=file)

    try:  # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 writer accepts
        for text_ in (*data, *metadata, *metadata.values()):
            text_.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedFileError(
            "header holds a name that is not valid Unicode (a lone surrogate escape)", file=file
        ) from None
    data_start = 8 + length
    data_size = size - data_start
    entries = {name: _check_entry(name, value, file) for name, value in data.items()}
    cursor = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != cursor:
            what = "overlap" if entry.begin < cursor else "leave a gap"
            raise MalformedFileError(
                f"data offsets {what} at byte {entry.begin} (expected {cursor})",
                file=file,
                tensor=entry.name,
            )
        cursor = entry.end
    if cursor != data_size:
        detail = "the file is truncated" if cursor > data_size else "bytes trail the last tensor"
        raise MalformedFileError(
            f"tensor data covers {cursor} bytes but the file holds {data_size}: {detail}",
            file=file,
        )
    return Header(entries=entries, metadata=dict(metadata), data_start=data_start, file_size=size)


def _check_entry(name: str, value: Any, file: Path) -> TensorEntry:
    if not isinstance(value, dict) or set(value) - {"dtype", "shape", "data_offsets"}:
        raise MalformedFileError(
            "entry must be an object with dtype, shape and data_offsets", file=file, tensor=name
        )
    dtype = value.get("dtype")
    shape = value.get("shape")
    offsets = value.get("data_offsets")
    if not isinstance(dtype, str):
        raise MalformedFileError("dtype must be a string", file=file, tensor=name)
    try:
        itemsize = dtype_itemsize(dtype, tensor=name)
    except UnsupportedDtypeError as exc:  # name the file too
        raise UnsupportedDtypeError(exc.message, file=file, tensor=name) from None
    if not isinstance(shape, list) or not all(_plain_int(d) for d in shape):
        raise MalformedFileError(
            f"shape must be a list of non-negative integers. Received: {received(shape)}",
            file=file,
            tensor=name,
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_plain_int(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise MalformedFileError(
            f"data_offsets must be [begin, end] with 0 <= begin <= end. Received: {received(offsets)}",
            file=file,
            tensor=name,
        )
    check_shape(shape, itemsize, file=file, tensor=name)
    nbytes = math.prod(shape) * itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise MalformedFileError(
            f"{dtype}{shape} needs {nbytes} bytes but data_offsets span {offsets[1] - offsets[0]}",
            file=file,
            tensor=name,
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


class MappedTensors:
    """Read-only numpy views of a safetensors file's tensors, memory-mapped, made on access."""

    def __init__(self, path: Path, header: Header, handle: BinaryIO | None = None) -> None:
        """``handle``: the open file ``header`` was read from; mapping it now pins that very file.

        Without it the path is opened again on first access, and a file replaced meanwhile (an
        atomic rewrite renames a new file over the path) would pair this header with another
        file's bytes; with it, a reader keeps the version it opened however often it is replaced.
        """
        self._path = path
        self._header = header
        self._mmap: mmap.mmap | None = None
        if handle is not None:
            self._mmap = self._map(handle)

    def _map(self, handle: BinaryIO) -> mmap.mmap:
        size = os.fstat(handle.fileno()).st_size
        if size != self._header.file_size:
            raise MalformedFileError(
                "the file changed size since its header was read; load it again", file=self._path
            )
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        # lets a streamed write copy these tensors in the kernel (copy_file_range)
        from weightio.format.streaming import register_file_mapping

        register_file_mapping(mapping, handle.fileno())
        return mapping

    def _buffer(self) -> mmap.mmap:
        if self._mmap is None:
            with open(self._path, "rb") as handle:
                self._mmap = self._map(handle)
        return self._mmap

    def get(self, name: str) -> np.ndarray:
        """Return tensor ``name`` as a read-only array backed by the file."""
        import numpy as np

        entry = self._header.entries[name]
        dtype = numpy_dtype(entry.dtype, tensor=name)
        if entry.end == entry.begin:
            array = np.empty(entry.shape, dtype=dtype)
            array.setflags(write=False)
            return array
        start = self._header.data_start + entry.begin
        count = (entry.end - entry.begin) // dtype.itemsize
        return np.frombuffer(self._buffer(), dtype=dtype, count=count, offset=start).reshape(
            entry.shape
        )


def build_header(
    tensors: Iterable[tuple[str, np.ndarray]], metadata: dict[str, str]
) -> tuple[bytes, list[tuple[str, np.ndarray]]]:
    """Lay out the header for ``tensors`` (in the given order) and return it with the arrays."""
    import numpy as np

    layout: dict[str, Any] = {"__metadata__": metadata}
    ordered: list[tuple[str, np.ndarray]] = []
    offset = 0
    for name, array in tensors:
        array = as_little_endian(np.asarray(array))
        nbytes = array.nbytes
        layout[name] = {
            "dtype": dtype_name(array.dtype, tensor=name),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
        ordered.append((name, array))
    body = json.dumps(layout, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    body += b" " * (-(8 + len(body)) % _ALIGN)
    return len(body).to_bytes(8, "little") + body, ordered


def write_tensors(handle: BinaryIO, header: bytes, tensors: list[tuple[str, np.ndarray]]) -> None:
    """Write a header and the tensor bytes, one tensor at a time."""
    handle.write(header)
    for _, array in tensors:
        handle.write(tensor_bytes(array))
