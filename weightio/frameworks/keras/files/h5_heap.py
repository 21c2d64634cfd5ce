"""Refuse HDF5 global heaps that send HDF5's own parser into an endless loop.

Variable-length strings (Keras's ``model_config``, ``keras_version`` attributes) live in global
heap collections (``GCOL``). HDF5 1.14's ``H5HG__cache_heap_deserialize`` walks a collection's
objects by adding each object's stated size to a pointer; an object with index 0 and size 0 (or a
size that wraps the pointer around) never advances, and the C loop spins forever: a 14 kB file
hangs any reader, and no Python timeout can interrupt C code. So before h5py reads anything,
``check_global_heaps`` finds every ``GCOL`` version-1 signature in the bytes (anything HDF5 could load as a
collection) and replays that walk with the superblock's size of lengths; a walk that does not move
forward is refused with ``MalformedFileError``.

The scan is one pass of ``bytes.find`` over the file (memory-mapped; a compressed zip member is
inflated once into an anonymous file and mapped), and replays only candidates that pass HDF5's own version check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weightio.errors import MalformedFileError, ResourceLimitError

_SIGNATURE = b"GCOL"
#: What the scan looks for: the signature and version 1, the only version HDF5 walks (any
#: other is refused before the walk), so weight bytes that happen to spell ``GCOL`` are
#: rarely replayed, and ``find`` matches a longer needle (0.24 -> 0.20 s per 256 MiB).
_CANDIDATE = _SIGNATURE + b"\x01"
_SUPERBLOCK = b"\x89HDF\r\n\x1a\n"
_MASK = (1 << 64) - 1
#: Most objects weightio replays in one collection (a real Keras file holds a handful).
MAX_OBJECTS = 1_000_000


def _walk_loops(read: Callable[[int, int], bytes], start: int, end: int, length: int) -> bool:
    """Whether HDF5's object walk of the collection at ``start`` would never finish."""
    head = read(start, 8 + length)
    if len(head) < 8 + length or head[4] != 1:  # HDF5 refuses other versions before walking
        return False
    size = int.from_bytes(head[8:8 + length], "little") & _MASK
    if size < 8 + length or start + size > end:  # HDF5 fails to load it: no walk
        return False
    header = 8 + length
    p, stop = start + header, start + size
    steps = 0
    while p < stop:
        if p + header > stop:  # the tail is too small for an object: free space, walk ends
            return False
        obj = read(p, header)
        index = int.from_bytes(obj[0:2], "little")
        obj_size = int.from_bytes(obj[8:8 + length], "little") & _MASK
        need = obj_size if index == 0 else (header + ((obj_size + 7) & ~7)) & _MASK
        nxt = (p + need) & _MASK
        if nxt <= p:
            return True
        p = nxt
        steps += 1
        if steps > MAX_OBJECTS:
            raise ResourceLimitError(
                f"an HDF5 global heap at byte {start} holds over {MAX_OBJECTS} objects"
            )
    return False


def check_global_heaps(data: bytes | memoryview | object, *, file: Path, start: int = 0,
                       end: int | None = None) -> None:
    """Refuse the HDF5 bytes ``data[start:end]`` if any global heap collection would hang HDF5.

    Args:
        data: The bytes (``bytes``, ``mmap``) holding the HDF5 file.
        start: Where the HDF5 file begins in ``data`` (a stored member of a ``.keras`` zip).
        end: Where it ends (default: the end of ``data``).
    """
    end = len(data) if end is None else end  # type: ignore[arg-type]

    def read(at: int, n: int) -> bytes:
        return bytes(data[at:min(at + n, end)])  # type: ignore[index]

    length = _length_size(read, start, end)
    if length is None:  # no superblock: HDF5 will refuse to open it anyway
        return
    find = data.find  # type: ignore[attr-defined]
    at = find(_CANDIDATE, start, end)
    while at >= 0:
        try:
            loops = _walk_loops(read, at, end, length)
        except ResourceLimitError as exc:
            raise exc.with_file(file) from None
        if loops:
            raise MalformedFileError(
                f"the HDF5 global heap at byte {at - start} has an object that does not "
                "advance (HDF5 would loop forever reading it); the file is corrupt or hostile",
                file=file,
            )
        at = find(_CANDIDATE, at + 1, end)


def _length_size(read: Callable[[int, int], bytes], start: int, end: int) -> int | None:
    """The superblock's "size of lengths" (HDF5 looks for it at 0, 512, 1024, 2048…)."""
    offset = 0
    while start + offset + 16 <= end:
        head = read(start + offset, 16)
        if head[:8] == _SUPERBLOCK:
            version = head[8]
            return head[14] if version in (0, 1) else head[10]
        offset = 512 if offset == 0 else offset * 2
    return None

