"""Reading zip containers (``.keras``, ``torch.save`` files) with every zipfile failure typed.

``zipfile`` reports damage in many ways: ``BadZipFile`` (bad local header, CRC mismatch),
``OSError``/``EOFError`` (seeks and reads past the end), ``struct.error`` (short headers),
``zlib.error``/``lzma.LZMAError`` (corrupt compressed data), ``NotImplementedError`` (unknown
compression or zip version), ``RuntimeError`` (an encrypted member), ``UnicodeDecodeError`` (a
name flagged UTF-8 that is not) and
``OverflowError``/``ValueError`` on absurd sizes. A hostile or damaged file must end in one
``MalformedFileError`` naming the file and the member, which ``zip_errors`` provides.
"""

from __future__ import annotations

import lzma
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from weightio.errors import MalformedFileError

#: Everything ``zipfile`` raises on damaged input.
ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    UnicodeDecodeError,
    OverflowError,
    ValueError,
    RuntimeError,  # "is encrypted, password required"
)


@contextmanager
def zip_errors(file: object, what: str) -> Iterator[None]:
    """Turn zipfile's failures inside the block into ``MalformedFileError`` about ``what``."""
    from weightio.errors import WeightioError

    try:
        yield
    except WeightioError:
        raise
    except ZIP_ERRORS as exc:
        raise MalformedFileError(
            f"{what} is damaged ({type(exc).__name__}: {str(exc)[:200]}); the zip is truncated "
            "or corrupt, re-download or re-save it",
            file=file,
        ) from None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, file: object) -> bytes:
    """The bytes of one member (its size already checked by the caller), failures typed."""
    with zip_errors(file, f"zip member {info.filename!r}"):
        return zf.read(info)


def is_zip(path: object) -> bool:
    """``zipfile.is_zipfile``, which itself raises ``BadZipFile`` on some damaged end records
    (a ZIP64 locator claiming several disks), with that failure typed.
    """
    with zip_errors(path, "the zip's end-of-archive record"):
        return zipfile.is_zipfile(path)  # type: ignore[arg-type]


def member_offset(handle: Any, info: zipfile.ZipInfo, file: Path) -> int:
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


#: Largest member ``inflate_member`` spools into memory; bigger ones go to an unnamed temp file.
SPOOL_IN_MEMORY_BYTES = 1 << 30


def inflate_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, file: object) -> Any:
    """Decompress one member once, into an anonymous seekable file; return it at offset 0.

    A reader that seeks inside a compressed member (h5py reading ``model.weights.h5`` in the
    order of the config, not of the file) makes ``zipfile`` restart decompression from the
    member's start at every backward seek: quadratic, minutes for a few hundred MB. Inflated once
    it reads like a stored member. The size is the member's declared one, which the caller has
    bounded (zip-bomb ratio); ``zipfile`` stops there and checks the CRC. The file has no name
    (``memfd_create`` up to ``SPOOL_IN_MEMORY_BYTES``, an unlinked temp file beyond), so it
    disappears with its last reference and nothing else can open it.
    """
    import tempfile

    if info.file_size <= SPOOL_IN_MEMORY_BYTES and hasattr(os, "memfd_create"):
        spool: Any = os.fdopen(os.memfd_create("weightio-inflated", os.MFD_CLOEXEC), "w+b")
    else:
        spool = tempfile.TemporaryFile()
    try:
        with zip_errors(file, f"zip member {info.filename!r}"), zf.open(info) as member:
            copied = 0
            while chunk := member.read(1 << 20):
                copied += len(chunk)
                if copied > info.file_size:  # pragma: no cover - zipfile stops at file_size
                    raise MalformedFileError(f"zip member {info.filename!r} inflates past its "
                                             "declared size", file=file)
                spool.write(chunk)
        spool.flush()
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise
