"""What a batch's SOURCES name: files, folders, globs and URLs, expanded in a stable order.

- a file (or a ``file://``/``s3://`` … URL of one) is itself, even if it does not exist: it
  then becomes that file's typed error, like any other file that cannot be read;
- a folder is the files directly inside it that weightio reads (by suffix), not hidden ones
  (a ``.NAME.weightio-tmp-*`` temp file is hidden);
- a glob (``runs/*.pt``, ``s3://bucket/run/step-*.pt``) is the files it matches.

Each source is listed once, in the order given, a folder's or glob's files sorted by name.
Steps come from file names (the last number in the name: ``step-000100.pt`` is step 100), or
from a checkpoint entry (``--step-from``, see ``weightio.batch.tracking``).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from weightio.errors import InvalidInputError
from weightio.format import remote

_GLOB = re.compile(r"[*?\[]")
_NUMBER = re.compile(r"\d+")


def readable_name(name: str) -> bool:
    """Whether weightio reads a file of this name by its suffix (folders list only these)."""
    from weightio.frameworks.table import TABLE

    lower = name.lower()
    if lower.startswith("."):
        return False
    return any(lower.endswith(suffix) for row in TABLE.files for suffix in row.suffixes)


def expand(sources: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The files ``sources`` name (see the module docstring), each once, as given or found.

    Raises:
        InvalidInputError: no source was given, or a folder or glob matched nothing readable.
    """
    if not sources:
        raise InvalidInputError("name at least one checkpoint, folder, glob or URL")
    found: list[str] = []
    seen: set[str] = set()
    for source in sources:
        text = os.fspath(source)
        matched = _expand_one(text)
        if not matched:
            raise InvalidInputError(f"{text!r} matches no file weightio reads")
        for item in matched:
            if item not in seen:
                seen.add(item)
                found.append(item)
    return found


def _expand_one(text: str) -> list[str]:
    local = remote.local_path(text)
    if local is None:  # a URL of object storage
        return [url for url in remote.expand(text) if readable_name(remote.basename(url))
                or not _GLOB.search(text) and url == text]
    shown = text if not remote.is_url(text) else str(local)
    if _GLOB.search(shown):
        return sorted(p for p in glob.glob(shown) if Path(p).is_file() and readable_name(Path(p).name))
    path = Path(shown)
    if path.is_dir():
        return sorted(str(p) for p in path.iterdir() if p.is_file() and readable_name(p.name))
    return [shown]


def basename(source: str) -> str:
    """The file name of a path or URL."""
    if remote.local_path(source) is None:
        return remote.basename(source)
    return Path(str(remote.local_path(source))).name


def archive_name(source: str) -> str:
    """The archive a batch writes for ``source``: its name with its last suffix replaced."""
    return PurePosixPath(basename(source)).stem + ".safetensors"


def step_from_name(source: str) -> int:
    """The last whole number in the file name (``step-000100.pt`` → 100).

    Raises:
        InvalidInputError: the name holds no number (then ``--step-from`` says where it is).
    """
    numbers = _NUMBER.findall(PurePosixPath(basename(source)).stem)
    if not numbers:
        raise InvalidInputError(
            f"cannot tell the step of {basename(source)!r} from its name (no number in it); "
            "name checkpoints by step (step-000100.pt) or give --step-from KEY"
        )
    return int(numbers[-1])


def destinations(sources: Sequence[str], out: str) -> list[str]:
    """The archive each source becomes in ``out`` (a folder path or URL).

    Raises:
        InvalidInputError: two sources would write one archive, or a source is its own output.
    """
    targets = [remote.join(out, archive_name(source)) for source in sources]
    owners: dict[str, str] = {}
    for source, target in zip(sources, targets):
        if target in owners:
            raise InvalidInputError(
                f"{owners[target]!r} and {source!r} would both be written to {target!r}; convert "
                "them into different folders"
            )
        owners[target] = source
        if remote.same_file(source, target):
            raise InvalidInputError(f"{source!r} would be overwritten by its own archive; pick another --out")
    return targets
