"""Tensor-by-tensor I/O: write and hash each tensor once, and give back the memory it used.

Archives are memory-mapped. Touching a mapped page makes it resident in *this* process (it counts
in RSS) until the mapping is closed or the pages are dropped; a lazy reader that touches a 1 GiB
file therefore ends with ~1 GiB resident though it allocated almost nothing. ``release`` drops the
pages behind one array with ``madvise(MADV_DONTNEED)``: for a read-only file mapping that only
forgets the page-table entries (the next touch faults them back in from the page cache), so it is
always safe, and it keeps the peak near the largest tensor in flight instead of the model.

``write_hashed`` writes tensors while a worker thread hashes them (``hashlib`` and ``write`` both
release the GIL), so each byte is read once for both; ``iter_chunks`` hands a tensor out in
bounded flat pieces for comparisons that must not hold two models at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np

from weightio.safetensors_io import tensor_bytes

_PAGE = mmap.PAGESIZE
#: Tensors in flight while writing: bounds extra memory to a few tensors.
_IN_FLIGHT = 3
#: Default piece size for ``iter_chunks``.
CHUNK_BYTES = 4 * 1024 * 1024


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return base


def release(array: np.ndarray) -> None:
    """Drop the resident pages behind ``array`` if it views a read-only file mapping.

    Does nothing for arrays in ordinary memory or where the platform lacks ``madvise``.
    """
    mapping = _mapping_of(array)
    if mapping is None or not hasattr(mapping, "madvise") or array.nbytes == 0:
        return
    try:
        start_of_map = np.frombuffer(mapping, dtype=np.uint8, count=0).ctypes.data
    except (ValueError, TypeError):  # closed mapping
        return
    begin = array.__array_interface__["data"][0] - start_of_map
    span = array.nbytes if array.flags.c_contiguous or array.flags.f_contiguous else None
    if span is None:  # strided view: release the extent it spans
        lo = min(0, sum(s * (n - 1) for s, n in zip(array.strides, array.shape) if s < 0))
        hi = sum(s * (n - 1) for s, n in zip(array.strides, array.shape) if s > 0)
        begin, span = begin + lo, hi - lo + array.itemsize
    first = max(0, (begin // _PAGE) * _PAGE)
    last = min(len(mapping), begin + span)
    if last > first:
        try:
            mapping.madvise(mmap.MADV_DONTNEED, first, last - first)
        except (OSError, ValueError):
            pass


#: Start writeback of what was written every this many bytes (see ``_Writeback``).
_WRITEBACK_BYTES = 32 * 1024 * 1024


class _Writeback:
    """Ask the kernel to start writing dirty pages to disk while we keep copying.

    ``atomic_write`` ends with ``fsync``; without a hint, Linux begins writeback only when dirty
    pages pile up or expire, so the whole file is flushed after the copy, serially (on the
    development VM ~2 s per GiB on top of the copy). ``sync_file_range(SYNC_FILE_RANGE_WRITE)``
    starts asynchronous writeback of a range and returns at once, so the disk works while the CPU
    copies and hashes, and the final ``fsync`` (which still makes everything durable) has little
    left to do. A no-op where the call is missing (not Linux, or no libc via ctypes).
    """

    _call: Any = None
    _loaded = False

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.started = 0
        try:
            self.fd = handle.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None
        if not _Writeback._loaded:
            _Writeback._loaded = True
            try:
                import ctypes
                import sys

                if sys.platform.startswith("linux"):
                    libc = ctypes.CDLL(None, use_errno=True)
                    call = libc.sync_file_range
                    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                    call.restype = ctypes.c_int
                    _Writeback._call = call
            except (OSError, AttributeError, ImportError):
                _Writeback._call = None

    def kick(self, final: bool = False) -> None:
        """Start writeback of everything written since the last kick, once enough has piled up."""
        if self.fd is None or _Writeback._call is None:
            return
        end = self.handle.tell()
        if end - self.started < _WRITEBACK_BYTES and not final:
            return
        self.handle.flush()
        _Writeback._call(self.fd, self.started, end - self.started, 2)  # SYNC_FILE_RANGE_WRITE
        self.started = end


#: ``id(mapping) -> (dup'd fd of the mapped file, file offset of the mapping)`` for file maps
#: whose bytes ``write_hashed`` may copy in the kernel; entries go when the mapping does.
_MAPPED_FILES: dict[int, tuple[int, int]] = {}


def register_file_mapping(mapping: mmap.mmap, fd: int, offset: int = 0) -> None:
    """Record that ``mapping`` maps the file open as ``fd`` from byte ``offset``.

    ``write_hashed`` then copies tensors that lie in the mapping with ``os.copy_file_range``
    (file to file inside the kernel: about half the CPU of ``write()`` from a memory map, which
    faults every page into this process) while the hash worker still reads the mapped bytes. A
    duplicate of ``fd`` is kept, and closed when the mapping is garbage collected, so the copy
    reads the very inode that was mapped even if the path was replaced meanwhile.
    """
    key = id(mapping)
    if key in _MAPPED_FILES:
        return
    dup = os.dup(fd)
    _MAPPED_FILES[key] = (dup, offset)

    def forget() -> None:
        _MAPPED_FILES.pop(key, None)
        with contextlib.suppress(OSError):
            os.close(dup)

    weakref.finalize(mapping, forget)


def _file_range(array: np.ndarray, data: memoryview) -> tuple[int, int] | None:
    """``(fd, offset)`` of the file holding exactly ``data``'s bytes if they lie in a known map."""
    if not _MAPPED_FILES or len(data) == 0:
        return None
    mapping = _mapping_of(array)
    if mapping is None or id(mapping) not in _MAPPED_FILES:
        return None
    try:
        start = np.frombuffer(mapping, dtype=np.uint8, count=0).ctypes.data
        address = np.frombuffer(data, dtype=np.uint8).ctypes.data
    except (ValueError, TypeError):  # closed mapping, or not a plain byte buffer
        return None
    if not (start <= address and address + len(data) <= start + len(mapping)):
        return None  # tensor_bytes had to copy (byte swap, strided view): write from memory
    fd, offset = _MAPPED_FILES[id(mapping)]
    return fd, offset + (address - start)


def _copy_file_range(handle: BinaryIO, source: tuple[int, int], count: int) -> int:
    """Copy ``count`` bytes from ``source`` to ``handle``'s position; return how many were copied.

    Stops early (the caller writes the rest from memory) where the kernel or filesystem cannot
    do it (no ``copy_file_range``, different filesystems on an old kernel, ...).
    """
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return 0
    try:
        out = handle.fileno()
    except (AttributeError, OSError, ValueError):
        return 0
    handle.flush()
    position = handle.tell()
    fd, offset = source
    done = 0
    try:
        while done < count:
            moved = copy(fd, out, count - done, offset + done, position + done)
            if moved <= 0:
                break
            done += moved
    except OSError:
        pass
    handle.seek(position + done)
    return done


def _sha256(data: memoryview) -> str:
    digest = hashlib.sha256()
    step = 64 * 1024 * 1024
    for start in range(0, len(data), step):
        digest.update(data[start : start + step])
    return digest.hexdigest()


def write_hashed(
    handle: BinaryIO, tensors: Iterable[tuple[str, np.ndarray]]
) -> dict[str, str]:
    """Write each tensor's stored bytes to ``handle`` and return ``{name: sha256}``.

    Each tensor is read once: a worker hashes the same bytes the main thread writes. At most a
    few tensors are in flight; each one's mapped pages are released when both are done.
    """
    digests: dict[str, str] = {}
    pending: deque[tuple[str, np.ndarray, Future[str]]] = deque()
    writeback = _Writeback(handle)
    with ThreadPoolExecutor(max_workers=max(1, min(2, (os.cpu_count() or 1)))) as pool:

        def settle(limit: int) -> None:
            while len(pending) > limit:
                name, array, future = pending.popleft()
                digests[name] = future.result()
                release(array)

        for name, array in tensors:
            data = tensor_bytes(array)
            future = pool.submit(_sha256, data)
            source = _file_range(array, data)
            copied = _copy_file_range(handle, source, len(data)) if source is not None else 0
            handle.write(data[copied:] if copied else data)
            writeback.kick()
            pending.append((name, array, future))
            settle(_IN_FLIGHT - 1)
        writeback.kick(final=True)
        settle(0)
    return digests


def iter_chunks(array: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """Yield ``array``'s elements in C order as flat pieces of about ``chunk_bytes`` bytes.

    Pieces are views when the array is C-contiguous (a memory map stays lazy), copies otherwise;
    the mapped pages behind each piece are released once the consumer moves on, so comparing two
    memory-mapped tensors this way holds two pieces, not two tensors.
    """
    step = max(1, chunk_bytes // max(1, array.itemsize))
    if array.flags.c_contiguous or array.ndim <= 1:
        flat = array.reshape(-1) if array.flags.c_contiguous else array
        for start in range(0, int(array.size), step):
            piece = flat[start : start + step]
            yield piece if array.flags.c_contiguous else np.ascontiguousarray(piece)
            release(piece)
        return
    # A strided view (a transposed kernel): copy whole leading-axis rows, a block at a time.
    row = max(1, int(np.prod(array.shape[1:])))
    rows = max(1, step // row)
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows]
        yield np.ascontiguousarray(block).reshape(-1)
        release(block)
