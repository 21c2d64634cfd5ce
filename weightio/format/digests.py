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
"""

from __future__ import annotations

import contextlib
import contextvars
import os
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


def start(path: os.PathLike[str] | str) -> PendingDigest:
    """Start hashing ``path`` and register it with the enclosing ``deferring_source_digests``."""
    collector = _COLLECTOR.get()
    pending = PendingDigest(path, collector[1] if collector is not None else DEFAULT_ALGORITHM)
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
