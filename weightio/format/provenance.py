"""The provenance record of an archive: where its weights came from, when, and by which weightio."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from weightio.format.hashing import DEFAULT_ALGORITHM, file_digest
from weightio.spec.model import Provenance
from weightio.version import __version__

#: A creation time fixed by ``fixed_time`` for the current context (a batch task on a worker).
_FIXED_TIME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "weightio_fixed_created_at", default=None
)


def epoch_time(value: str | int) -> str:
    """``SOURCE_DATE_EPOCH``-style seconds since 1970 as provenance writes a time (UTC, ISO 8601).

    Raises:
        InvalidInputError: not a non-negative whole number of seconds.
    """
    from weightio.errors import InvalidInputError

    text = str(value).strip()
    if not text.isdigit():
        raise InvalidInputError(
            f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, not {text[:40]!r}"
        )
    return _dt.datetime.fromtimestamp(int(text), _dt.timezone.utc).isoformat()


def now_utc() -> str:
    """The creation time provenance records: UTC, ISO 8601, seconds precision.

    Reproducible when asked: inside ``fixed_time(...)`` that time, else ``SOURCE_DATE_EPOCH``
    (seconds since 1970, the reproducible-builds convention) when it is set, else the clock.
    Two conversions of one source with the same time are bit-identical files.
    """
    fixed = _FIXED_TIME.get()
    if fixed is not None:
        return fixed
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return epoch_time(epoch)
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@contextlib.contextmanager
def fixed_time(created_at: str | None) -> Iterator[None]:
    """Within the block (this thread's context), provenance records ``created_at`` (``None``:
    as ``now_utc`` would). ``weightio.batch`` carries the client's ``SOURCE_DATE_EPOCH`` to
    workers this way, whose environment is their own.
    """
    token = _FIXED_TIME.set(created_at)
    try:
        yield
    finally:
        _FIXED_TIME.reset(token)


def file_sha256(path: os.PathLike[str] | str) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_file_digest(path: os.PathLike[str] | str, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """The tagged digest (``"blake3:<hex>"``) of a source file, as provenance records it."""
    return file_digest(path, algorithm)


def provenance(
    framework: str,
    *,
    framework_version: str | None,
    source_class: str | None,
    source_file: os.PathLike[str] | str | None = None,
    transforms: list[str] | None = None,
    source_key: str | None = None,
) -> Provenance:
    """Build the provenance record; a file is named by base name and digest, never full path.

    Inside ``weightio.format.digests.deferring_source_digests()`` (``convert`` to an archive) the
    file's digest is computed on a worker thread while the tensors are copied, and ``save`` fills
    it in before the header is final; everywhere else it is computed here (BLAKE3).
    """
    from weightio.format import digests as source_digest

    digest = None
    if source_file is not None:
        if source_digest.deferring():
            source_digest.start(source_file)
        else:
            digest = source_file_digest(source_file)
    return Provenance(
        source_framework=framework,  # type: ignore[arg-type]
        source_framework_version=framework_version,
        source_class=source_class,
        source_file=None if source_file is None else Path(source_file).name,
        source_digest=digest,
        source_key=source_key,
        weightio_version=__version__,
        created_at=now_utc(),
        transforms=sorted(set(transforms or [])),
    )
