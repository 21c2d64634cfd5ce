"""Hash a source file in the background while its tensors are being converted.

Provenance records the digest of the whole source file (BLAKE3 by default, sha256 on request).
Computing it up front costs a full pass over the file before the first tensor is written,
although the digest is only needed in the archive header, and ``weightio.save`` writes the header last, over a
placeholder of the same length. ``convert`` therefore opens its source inside
``deferring_source_digests()``: ``provenance()`` then starts hashing the file on a worker thread
(both hashers release the GIL; BLAKE3 uses every core) and leaves ``source_digest`` empty, and ``save`` fills it in from
the pending digest just before it writes the final header. Nothing is dropped: the digest is of
the same bytes, computed by the same code, it is only computed at the same time as the copy.

Outside that context (``weightio.read`` and every other caller) the digest is computed at once,
as before, so nobody ever sees an archive whose provenance silently lacks it.

``weightio convert`` on the command line starts even earlier: ``head_start`` begins the hash
before the CLI imports the readers (pydantic, the spec classes, numpy: ~0.3 s of one core with
the GIL held, while BLAKE3 releases it), and ``start`` or ``head_started`` take it over when
the file is unchanged. On a 1 GiB ``.pt`` that took ~0.25 s off the whole command.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from weightio.format.hashing import DEFAULT_ALGORITHM, check_algorithm, file_digest

_COLLECTOR: contextvars.ContextVar[tuple[list[PendingDigest], str] | None] = contextvars.ContextVar(
    "weightio_deferred_source_digests", default=None
)


class PendingDigest:
    """The digest of one file, being computed on a daemon thread; ``result()`` waits for it."""

    def __init__(self, path: os.PathLike[str] | str, algorithm: str = DEFAULT_ALGORITHM) -> None:
        self.path = Path(path)
        self.algorithm = check_algorithm(algorithm)
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="weightio-source-digest", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            digest = file_digest(self.path, self.algorithm, cancelled=self._cancel.is_set)
            self._digest = digest or None
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> str:
        """The tagged digest (``"blake3:<hex>"``); ``MalformedFileError`` if the file is unreadable."""
        self._thread.join()
        if self._error is not None:
            from weightio.errors import MalformedFileError

            raise MalformedFileError(
                f"could not read the source file to record its digest ({self._error})",
                file=self.path,
            ) from self._error
        if self._digest is None:
            raise RuntimeError("source digest was cancelled")  # pragma: no cover
        return self._digest

    def cancel(self) -> None:
        """Stop hashing (the result is no longer wanted)."""
        self._cancel.set()


def deferring() -> bool:
    """True inside ``deferring_source_digests()``."""
    return _COLLECTOR.get() is not None


#: Files whose digest ``head_start`` began: (real path, algorithm) -> (the file's identity
#: then, the pending digest). ``start`` takes one over if the file is still the same.
_HEAD_STARTS: dict[tuple[str, str], tuple[tuple[int, ...], PendingDigest]] = {}
#: ``head_start`` only bothers for files this large (a small file hashes in microseconds).
HEAD_START_BYTES = 16 * 1024 * 1024


def _identity(path: str) -> tuple[int, ...] | None:
    """What says a regular file has not changed: device, inode, size, mtime and ctime (ns)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def head_start(source: str, algorithm: str | None) -> None:
    """Begin hashing a large local ``source`` file now, on a thread, for a ``convert`` that will
    record its digest.

    The CLI calls this before it imports the readers: the import (~0.3 s of one core, the GIL
    held) then runs beside the hash (BLAKE3 releases the GIL), where the second core was idle.
    ``start`` takes the result over only when the same algorithm is asked for the same file
    with the same identity (device, inode, size, times); otherwise it is cancelled and the
    file hashed again, so the digest is always of the bytes that were read. Nothing happens
    for URLs, small or unreadable files, or an algorithm the caller has not validated yet.
    """
    algorithm = DEFAULT_ALGORITHM if algorithm is None else algorithm
    if algorithm not in ("blake3", "sha256") or "://" in source:
        return
    real = os.path.realpath(source)
    identity = _identity(real)
    if identity is None or identity[2] < HEAD_START_BYTES or (real, algorithm) in _HEAD_STARTS:
        return
    _HEAD_STARTS[(real, algorithm)] = (identity, PendingDigest(real, algorithm))


def _taken_over(path: os.PathLike[str] | str, algorithm: str) -> PendingDigest | None:
    real = os.path.realpath(path)
    started = _HEAD_STARTS.pop((real, algorithm), None)
    if started is None:
        return None
    identity, pending = started
    if _identity(real) != identity:
        pending.cancel()
        return None
    return pending


def head_started(path: os.PathLike[str] | str) -> str | None:
    """The default digest of ``path`` if ``head_start`` began it and the file is unchanged
    (waiting for it to finish), else ``None``.
    """
    pending = _taken_over(path, DEFAULT_ALGORITHM)
    return None if pending is None else pending.result()


def start(path: os.PathLike[str] | str) -> PendingDigest:
    """Start hashing ``path`` (or take over ``head_start``'s hash of it) and register it with
    the enclosing ``deferring_source_digests``.
    """
    collector = _COLLECTOR.get()
    algorithm = collector[1] if collector is not None else DEFAULT_ALGORITHM
    pending = _taken_over(path, algorithm) or PendingDigest(path, algorithm)
    if collector is not None:
        collector[0].append(pending)
    return pending


@contextlib.contextmanager
def deferring_source_digests(
    enabled: bool = True, algorithm: str = DEFAULT_ALGORITHM
) -> Iterator[list[PendingDigest]]:
    """Within the block, ``provenance()`` hashes source files in the background with ``algorithm``.

    Yields the list the pending digests are collected in. The caller must hand them to
    ``weightio.save(..., source_digest=...)``; ones still running when the block is left by an
    exception are cancelled.
    """
    if not enabled:
        yield []
        return
    collected: list[PendingDigest] = []
    token = _COLLECTOR.set((collected, check_algorithm(algorithm)))
    try:
        yield collected
    except BaseException:
        for pending in collected:
            pending.cancel()
        raise
    finally:
        _COLLECTOR.reset(token)


def pick(pending: list[PendingDigest], archive: object) -> PendingDigest | None:
    """The pending digest of the file ``archive``'s provenance names, or None.

    Raises ``RuntimeError`` if the provenance names a file that was deferred but is not among
    ``pending`` (a digest would otherwise go missing silently).
    """
    provenance = getattr(getattr(archive, "spec", None), "provenance", None)
    if provenance is None or provenance.source_file is None or provenance.recorded_source_digest():
        return None
    for digest in pending:
        if digest.path.name == provenance.source_file:
            return digest
    if pending:  # pragma: no cover - every deferring reader registers the file it names
        raise RuntimeError(f"no pending digest for source file {provenance.source_file!r}")
    return None
