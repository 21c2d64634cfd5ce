"""Tensor-by-tensor I/O: write and hash each tensor once, and give back the memory it used.

Archives are memory-mapped. Touching a mapped page makes it resident in *this* process (it counts
in RSS) until the mapping is closed or the pages are dropped; a lazy reader that touches a 1 GiB
file therefore ends with ~1 GiB resident though it allocated almost nothing. ``release`` drops the
pages behind one array with ``madvise(MADV_DONTNEED)``: for a read-only file mapping that only
forgets the page-table entries (the next touch faults them back in from the page cache), so it is
always safe, and it keeps the peak near the largest tensor in flight instead of the model.

``write_hashed`` writes tensors while worker threads hash them (BLAKE3 on every core by default,
``hashlib`` and ``write`` all release the GIL), so each byte is read once for both;
``iter_chunks`` hands a tensor out in bounded flat pieces for comparisons that must not hold two models at once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

from weightio.format.hashing import DEFAULT_ALGORITHM, hash_bytes
from weightio.progress import report
from weightio.spec.dtypes import tensor_bytes

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np  # imported where arrays are touched: mapping a file needs no numpy

_PAGE = mmap.PAGESIZE
#: Bytes a page fault may map around the faulting address (Linux ``fault_around_bytes``: 64 KiB).
FAULT_AROUND = 64 * 1024
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

    The range is widened by ``FAULT_AROUND`` on both sides: a page fault maps up to 64 KiB of
    cached pages around the faulting address (Linux ``fault_around_bytes``), so touching a tensor
    also maps the ends of its neighbours, which may be done with already; left alone, those pages
    added up to ~0.1 GB over the 246 tensors of a 1 GiB diff. Dropping a neighbour's page that is
    still in use only makes it fault back in from the page cache.

    Does nothing for arrays in ordinary memory or where the platform lacks ``madvise``.
    """
    mapping = _mapping_of(array)
    if mapping is None or not hasattr(mapping, "madvise") or array.nbytes == 0:
        return
    import numpy as np

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
    first = max(0, ((begin - FAULT_AROUND) // _PAGE) * _PAGE)
    last = min(len(mapping), begin + span + FAULT_AROUND)
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
    import numpy as np

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


#: Side of the square blocks a transposed matrix is copied in: a 256 x 256 float32 block is 256 KiB,
#: so the rows read and the rows written stay in cache (measured 1.2 GB/s against 0.75 GB/s for
#: numpy's copy of a whole transposed view, which walks one of the two with a large stride).
TILE = 256


def tiled_copy(array: np.ndarray, out: np.ndarray, pool: ThreadPoolExecutor | None = None) -> None:
    """``out[...] = array`` for a C-contiguous ``out``, in cache-sized tiles, on two threads.

    A 2-D ``array`` whose transpose is C-contiguous (the transposed kernels readers hand out) is
    copied block by block; other strided views slab by slab along their first axis. With
    ``pool``, the lower half of the rows goes to a worker while this thread copies the upper.
    """
    import numpy as np

    if array.ndim == 2 and array.T.flags.c_contiguous:
        def part(lo: int, hi: int) -> None:
            cols = array.shape[1]
            for i in range(lo, hi, TILE):
                for j in range(0, cols, TILE):
                    out[i : i + TILE, j : j + TILE] = array[i : i + TILE, j : j + TILE]
    else:
        def part(lo: int, hi: int) -> None:
            np.copyto(out[lo:hi], array[lo:hi])
    rows = array.shape[0] if array.ndim else 0
    if array.ndim == 0:
        np.copyto(out, array)
        return
    half = (rows // 2 + TILE - 1) // TILE * TILE if pool is not None and rows > TILE else rows
    future = pool.submit(part, half, rows) if pool is not None and half < rows else None
    part(0, half)
    if future is not None:
        future.result()


class _Buffers:
    """Reused output buffers for tensors that must be copied before they are written.

    A strided view (a transposed kernel) has to become C-ordered bytes; copying it into a fresh
    array of its size each time costs a page fault and zero-fill per page (and on a VM that gave
    freed memory back to the host, ~2.8 s per GiB to touch again). The few tensors in flight take
    buffers from here and give them back once hashed and written.
    """

    def __init__(self) -> None:
        self.free: list[np.ndarray] = []

    def take(self, nbytes: int) -> np.ndarray:
        import numpy as np

        for index, buffer in enumerate(self.free):
            if buffer.nbytes >= nbytes:
                return self.free.pop(index)
        return np.empty(nbytes, dtype=np.uint8)

    def give(self, buffer: np.ndarray | None) -> None:
        if buffer is not None:
            self.free.append(buffer)


def _stored_bytes(array: np.ndarray, buffers: _Buffers, pool: ThreadPoolExecutor) -> tuple[memoryview, Any]:
    """``tensor_bytes(array)``; a strided view is copied (tiled, two threads) into a reused buffer."""
    little = array.dtype.byteorder in ("<", "|") or (array.dtype.byteorder == "=" and sys.byteorder == "little")
    if array.flags.c_contiguous or not little or array.size == 0:
        return tensor_bytes(array), None
    buffer = buffers.take(array.nbytes)
    out = buffer[: array.nbytes].view(array.dtype).reshape(array.shape)
    tiled_copy(array, out, pool)
    return memoryview(buffer[: array.nbytes]), buffer


def write_hashed(
    handle: BinaryIO, tensors: Iterable[tuple[str, np.ndarray]], algorithm: str = DEFAULT_ALGORITHM
) -> dict[str, str]:
    """Write each tensor's stored bytes to ``handle`` and return ``{name: "<algorithm>:<hex>"}``.

    Each tensor is read once: a worker hashes the same bytes the main thread writes (or the
    kernel copies, see ``register_file_mapping``). A strided view (a transposed kernel) is first
    copied in cache-sized tiles on two threads into a reused buffer (``tiled_copy``). At most a
    few tensors are in flight; each one's mapped pages are released when both are done.
    """
    digests: dict[str, str] = {}
    pending: deque[tuple[str, np.ndarray, Future[str], Any]] = deque()
    writeback = _Writeback(handle)
    buffers = _Buffers()
    workers = max(1, min(2, (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="weightio-copy") as copier:

        def settle(limit: int) -> None:
            while len(pending) > limit:
                name, array, future, buffer = pending.popleft()
                digests[name] = future.result()
                buffers.give(buffer)
                release(array)

        for name, array in tensors:
            data, buffer = _stored_bytes(array, buffers, copier if workers > 1 else None)
            future = pool.submit(hash_bytes, data, algorithm)
            source = _file_range(array, data)
            copied = _copy_file_range(handle, source, len(data)) if source is not None else 0
            handle.write(data[copied:] if copied else data)
            writeback.kick()
            report(len(data))  # convert's progress bar, when one is drawn
            pending.append((name, array, future, buffer))
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
    import numpy as np

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
