"""Only regular files: what weightio reads is checked before it is opened, and opened so that
nothing can block.

A FIFO given as a model file makes ``open()`` wait for a writer forever; a character device
(``/dev/zero``, ``/dev/urandom``) reads without end, and opening some devices has effects of its
own. Every reader path goes through ``check_regular`` (``stat``, before any ``open``) and opens
with ``open_regular``, which opens non-blocking (a FIFO swapped in after the check still cannot
block), checks the open file again with ``fstat``, and only then hands back a normal file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from weightio.errors import SourceNotFoundError, UnsupportedSourceError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no FIFOs, no O_NONBLOCK
    fcntl = None  # type: ignore[assignment]


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _refuse(path: os.PathLike[str] | str, mode: int) -> UnsupportedSourceError:
    return UnsupportedSourceError(
        f"is {_kind(mode)}, not a regular file; weightio reads model files only (nothing was "
        "opened)",
        file=path,
    )


def check_regular(path: os.PathLike[str] | str, *, folders: bool = False) -> os.stat_result:
    """``stat`` ``path`` (following links) and refuse anything but a regular file (or a folder,
    with ``folders``), before anything opens it.

    Raises:
        SourceNotFoundError: nothing is there.
        UnsupportedSourceError: a FIFO, socket or device (or a folder without ``folders``).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SourceNotFoundError("no such file or folder", file=path) from None
    except OSError as exc:
        raise UnsupportedSourceError(f"cannot be examined ({exc.strerror})", file=path) from None
    if stat.S_ISREG(info.st_mode) or (folders and stat.S_ISDIR(info.st_mode)):
        return info
    if stat.S_ISDIR(info.st_mode):
        raise UnsupportedSourceError("is a folder; name a file", file=path)
    raise _refuse(path, info.st_mode)


def open_regular(path: os.PathLike[str] | str) -> BinaryIO:
    """Open a regular file for reading, never blocking on what is not one.

    Raises:
        SourceNotFoundError, UnsupportedSourceError: as ``check_regular``.
    """
    check_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SourceNotFoundError("no such file", file=path) from None
    except OSError as exc:
        raise UnsupportedSourceError(f"cannot be opened ({exc.strerror})", file=path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise _refuse(path, mode)
        if fcntl is not None:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def inside_folder(path: Path, folder: Path) -> bool:
    """Whether ``path``, links resolved, is a file directly in ``folder`` (links resolved)."""
    return path.resolve().parent == folder.resolve()
