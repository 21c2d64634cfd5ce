"""The one way weightio writes a file: whole or not at all.

A temp file beside the target (same folder, so the rename never crosses a filesystem), written,
flushed and fsynced, given the mode a normal ``open`` would have given it, renamed over the target
with ``os.replace`` (atomic on POSIX), then the folder fsynced so the rename itself is durable.
On any failure the temp file is removed and the target is exactly as it was. A crash leaves at most
a ``.<name>.weightio-tmp-*`` file, which the next write to that target removes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from weightio.errors import TargetExistsError, WeightioError, WriteError

TEMP_MARKER = ".weightio-tmp-"

#: Fault-injection point for the fault tests; ``None`` (a no-op) in production. When set it is
#: called as ``fault_hook(point)`` at each commit step of every write: ``"header-written"``
#: (``write_streamed``, placeholder header on disk), ``"before-rename"`` (temp complete and
#: fsynced, target untouched) and ``"renamed"`` (target replaced, folder fsynced), so a test's
#: child process can SIGKILL itself at an exact step. Never set it outside tests.
fault_hook: Callable[[str], None] | None = None


def reach(point: str) -> None:
    """Call ``fault_hook`` at a named step of a write (no-op unless a fault test set it)."""
    if fault_hook is not None:
        fault_hook(point)


def _exists(target: Path) -> TargetExistsError:
    return TargetExistsError(
        "already exists and overwrite=False; remove it or allow overwriting", file=target
    )


def _refuse_special(target: Path) -> None:
    """A target that exists must be a regular file (or a link, which is replaced, not followed).

    Renaming over a FIFO, socket or device node would replace it with a regular file (as root,
    ``/dev/null`` itself): refused, and the node is left as it was.
    """
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _write_error(exc, target) from exc
    if stat.S_ISDIR(mode):
        raise WriteError("the target is a folder; name a file to write", file=target)
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device node")
        raise WriteError(
            f"the target is {kind}, not a regular file; weightio writes regular files only and "
            "left it as it was. Name a file to write",
            file=target,
        )


def _check_target(target: Path, overwrite: bool = True) -> None:
    if target.is_dir():
        raise WriteError("the target is a folder; name a file to write", file=target)
    _refuse_special(target)
    if not overwrite and os.path.lexists(target):
        raise _exists(target)
    parent = target.parent
    if not parent.is_dir():
        raise WriteError(f"the folder {str(parent)!r} does not exist; create it first", file=target)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"the folder {str(parent)!r} is not writable", file=target)


def _new_file_mode(target: Path) -> int:
    """Mode the file should end with: the replaced file's, else 0o666 minus the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_stale_temps(target: Path) -> None:
    """Remove temp files an earlier, killed write to this target left behind."""
    prefix = f".{target.name}{TEMP_MARKER}"
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    # Only stale ones: a concurrent writer's temp is younger than a minute.
                    if time.time() - entry.stat().st_mtime > 60:
                        os.unlink(entry.path)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform can open a folder)."""
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(
    target: os.PathLike[str] | str, *, suffix: str = "", overwrite: bool = True
) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it becomes ``target`` atomically.

    For libraries that insist on writing to a path themselves (``keras.Model.save``). ``suffix``
    keeps an extension such a library checks for.
    """
    target = Path(target)
    _check_target(target, overwrite)
    _remove_stale_temps(target)
    temp = target.parent / f".{target.name}{TEMP_MARKER}{secrets.token_hex(6)}{suffix}"
    try:
        yield temp
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(temp, target, overwrite)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(exc, OSError) and not isinstance(exc, WeightioError):
            raise _write_error(exc, target) from exc
        raise


@contextlib.contextmanager
def atomic_write(target: os.PathLike[str] | str, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file; when the block ends without error it replaces ``target`` atomically.

    With ``overwrite=False`` the file is published with ``os.link`` instead of ``os.replace``:
    atomic too, and it fails with ``TargetExistsError`` if ``target`` exists by then, so of
    several writers racing for one new name exactly one wins and none clobbers another.
    """
    target = Path(target)
    _check_target(target, overwrite)
    _remove_stale_temps(target)
    temp = target.parent / f".{target.name}{TEMP_MARKER}{secrets.token_hex(6)}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _write_error(exc, target) from exc
    handle = os.fdopen(fd, "wb")
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        _commit(temp, target, overwrite)
    except BaseException as exc:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(exc, OSError) and not isinstance(exc, WeightioError):
            raise _write_error(exc, target) from exc
        raise


def _commit(temp: Path, target: Path, overwrite: bool) -> None:
    """Publish the complete, fsynced ``temp`` as ``target`` and make the new name durable."""
    os.chmod(temp, _new_file_mode(target))
    reach("before-rename")
    _refuse_special(target)  # again: a node made while the file was written is kept too
    if overwrite:
        os.replace(temp, target)
    else:
        try:
            os.link(temp, target)  # fails if target exists: no writer clobbers another
        except FileExistsError:
            raise _exists(target) from None
        os.unlink(temp)
    fsync_folder(target.parent)
    reach("renamed")


def _write_error(exc: OSError, target: Path) -> WriteError:
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EFBIG: "the file is larger than this process may write",
        errno.EACCES: "permission denied",
        errno.EROFS: "the filesystem is read-only",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return WriteError(f"writing failed ({reason}); the target was left unchanged", file=target)
