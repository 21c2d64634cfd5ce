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
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

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
