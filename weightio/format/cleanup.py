"""``weightio clean``: remove the temp files that killed weightio writes left behind.

Every weightio write goes through ``weightio.format.atomic``: a temp file ``.<name>.weightio-tmp-<12 hex>``
(plus the extension a library insists on, ``.keras`` or ``.h5``) beside the target, renamed over it
once complete. A write killed before the rename (``kill -9``, the OOM killer, a power cut) leaves
that temp file. The next write to the same target removes it, but a target never written again
keeps it forever: this finds and removes such files.

Only files weightio itself creates are touched: the name must match the temp pattern exactly, the
entry must be a regular file (a symlink is never followed nor removed), and it must not have been
modified for ``older_than`` seconds (60 by default, the threshold the writers use), so a write still
in progress keeps its temp file. Folders are searched one level deep unless ``recursive``;
symlinked folders are never entered.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from weightio.errors import InvalidInputError, SourceNotFoundError, WriteError
from weightio.format.atomic import TEMP_MARKER
from weightio.options import check_tolerance

#: ``.<target name><marker><12 hex>[.<ext>]``: exactly the names ``weightio.format.atomic`` gives temps.
TEMP_NAME = re.compile(
    r"^\.(?P<target>.+)" + re.escape(TEMP_MARKER) + r"[0-9a-f]{12}(?:\.[A-Za-z0-9]{1,16})?$"
)
#: Default age (seconds) below which a temp file may belong to a live write and is kept.
DEFAULT_OLDER_THAN = 60.0


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a file name weightio's atomic writer gives its temp files."""
    return TEMP_NAME.match(name) is not None


def _folders(folders: Iterable[os.PathLike[str] | str]) -> list[Path]:
    found = []
    for folder in folders:
        path = Path(folder)
        if not path.exists():
            raise SourceNotFoundError("no such folder", file=path)
        if not path.is_dir():
            raise InvalidInputError("not a folder; name the folder to clean", file=path)
        found.append(path)
    return found


def _walk(folder: Path, recursive: bool) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise WriteError(f"cannot list the folder ({exc.strerror or exc})", file=folder) from None
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False):
            yield entry
        elif recursive and entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), recursive)


def find_stale_temps(
    folders: Iterable[os.PathLike[str] | str] = (".",),
    *,
    older_than: float = DEFAULT_OLDER_THAN,
    recursive: bool = False,
) -> list[Path]:
    """Temp files of weightio in ``folders`` unmodified for ``older_than`` seconds (module doc)."""
    if not older_than >= 0:  # also refuses NaN
        raise InvalidInputError(f"--older-than must be 0 or more seconds. Received: {older_than}")
    now = time.time()
    stale = []
    for folder in _folders(folders):
        for entry in _walk(folder, recursive):
            if not is_temp_name(entry.name):
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:  # removed meanwhile (its writer, or another clean)
                continue
            if age >= older_than:
                stale.append(Path(entry.path))
    return stale


def clean_stale_temps(
    folders: Iterable[os.PathLike[str] | str] = (".",),
    *,
    older_than: float = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    recursive: bool = False,
    on_remove: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Remove weightio's stale temp files in ``folders``; return the paths removed.

    Args:
        folders: Folders to search (each must exist).
        older_than: Keep temp files modified less than this many seconds ago (a live write's).
        dry_run: Remove nothing; return what would be removed.
        recursive: Also search sub-folders (never through a symlink).
        on_remove: Called with each path as it is removed (or would be, with ``dry_run``).

    Raises:
        SourceNotFoundError / InvalidInputError: a folder is missing or not a folder, or
            ``older_than`` is negative (that would take a live write's temp file).
        WriteError: a temp file could not be removed (the others still are).
    """
    older_than = check_tolerance("older_than", older_than)
    removed: list[Path] = []
    failed: list[str] = []
    for path in find_stale_temps(folders, older_than=older_than, recursive=recursive):
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                failed.append(f"{path} ({exc.strerror or exc})")
                continue
        removed.append(path)
        if on_remove is not None:
            on_remove(path)
    if failed:
        raise WriteError(
            f"could not remove {len(failed)} temp file(s): {', '.join(failed[:5])}; check the "
            "folder's permissions"
        )
    return removed
