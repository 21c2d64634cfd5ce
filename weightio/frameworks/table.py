"""The one table of sources and targets: how each is recognised and who reads or writes it.

A *source* is what ``weightio.read`` accepts: a live object (recognised by its class's module,
so no framework is imported to ask), a file (by suffix, or by its first bytes when the suffix is
unknown) or a folder. A *target* is what ``weightio.convert`` writes, chosen by the destination's
suffix or by name. Each framework package fills in its own rows (``frameworks/<name>/table.py``,
imported from the explicit list in ``weightio.frameworks``); the verbs only look rows up here, so
adding a file type is one row in its framework's table.

Opening a source gives a ``Source``: the archive, and a runner for the original model when one
can be run, so conversions are checked against the source itself and not only against
weightio's own reading of it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import UnsupportedSourceError, WeightioError
from weightio.format.archive import Archive
from weightio.format.paths import check_regular, open_regular

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]

#: How many leading bytes of a file the ``sniff`` predicates see.
SNIFF_BYTES = 16


@dataclass
class Source:
    """An opened source: its archive, and a way to run the original model when there is one."""

    archive: Archive
    framework: str
    runner: Runner | None = None
    native: Any = None
    #: Why the source cannot be run when ``runner`` is None (recorded in a partial proof).
    not_run: str | None = None


@dataclass(frozen=True)
class ObjectSource:
    """Live objects of one kind: recognised by ``matches``, read by ``open``."""

    framework: str
    what: str
    matches: Callable[[object], bool]
    open: Callable[..., Source]
    #: Copies an archive's weights into such an object (``weightio.load_into``), if it can;
    #: takes ``strict=`` and ``rename=`` and returns a ``frameworks.pairing.LoadReport``.
    load_into: Callable[..., Any] | None = None


@dataclass(frozen=True)
class FileSource:
    """Files (or folders) of one kind: recognised by suffix, name or first bytes."""

    framework: str
    what: str
    open: Callable[..., Source]
    #: Lower-case name endings (``".keras"``, ``".weights.h5"``): the longest match wins.
    suffixes: tuple[str, ...] = ()
    #: For paths no suffix claims: a predicate on the path itself (folders, index files).
    claims: Callable[[Path], bool] | None = None
    #: For regular files no suffix claims: a predicate on their first ``SNIFF_BYTES`` bytes.
    sniff: Callable[[bytes], bool] | None = None
    #: How the row is named in messages listing what weightio reads (``None``: not listed).
    listed_as: str | None = None


@dataclass(frozen=True)
class Target:
    """One kind of output ``weightio.convert`` writes."""

    name: str
    framework: str
    suffixes: tuple[str, ...]
    #: Builds the native model from an archive and returns ``(native, runner)``; ``runner`` is
    #: None when the target cannot be run here (the check then rests on the numpy runtime).
    #: ``build(archive, seed=...)``: the probe's seed, for a target that needs example inputs.
    build: Callable[..., tuple[Any, Runner | None]]
    #: Writes it: ``write(archive, native, destination, **write_options) -> Path``.
    write: Callable[..., Path]
    #: Whether a weights-only archive (no architecture) can be written to this target.
    weights_only: bool = False
    what: str = ""


@dataclass
class Table:
    """Every row, in the order framework packages registered them."""

    objects: list[ObjectSource] = field(default_factory=list)
    files: list[FileSource] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def add(self, row: ObjectSource | FileSource | Target) -> None:
        """Register a row; a target name or suffix claimed twice is a bug."""
        if isinstance(row, ObjectSource):
            self.objects.append(row)
        elif isinstance(row, FileSource):
            taken = {s for r in self.files for s in r.suffixes}
            clash = taken.intersection(row.suffixes)
            if clash:
                raise RuntimeError(f"file suffixes {sorted(clash)} are claimed twice")
            self.files.append(row)
        else:
            if any(t.name == row.name for t in self.targets):
                raise RuntimeError(f"target {row.name!r} is registered twice")
            self.targets.append(row)


#: The table every framework package fills in.
TABLE = Table()


def class_modules(obj: object) -> list[str]:
    """The modules of ``obj``'s classes, most derived first (asked without importing anything)."""
    return [cls.__module__ or "" for cls in type(obj).__mro__]


def from_modules(*prefixes: str) -> Callable[[object], bool]:
    """A ``matches`` predicate: some class of the object comes from a module under a prefix."""

    def matches(obj: object) -> bool:
        return any(
            module == prefix.rstrip(".") or module.startswith(prefix)
            for module in class_modules(obj)
            for prefix in prefixes
        )

    return matches


def object_source(obj: object) -> ObjectSource | None:
    """The row reading live object ``obj``, or None."""
    return next((row for row in TABLE.objects if row.matches(obj)), None)


def framework_of(obj: object) -> str | None:
    """Which framework a live object belongs to, or None."""
    row = object_source(obj)
    return row.framework if row is not None else None


def _suffix_row(path: Path) -> FileSource | None:
    name = path.name.lower()
    best: tuple[int, FileSource] | None = None
    for row in TABLE.files:
        for suffix in row.suffixes:
            if name.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), row)
    return best[1] if best else None


def readable_files() -> str:
    """What weightio reads, for messages: ``.keras, .h5, .pt … and sharded sets``."""
    return ", ".join(row.listed_as for row in TABLE.files if row.listed_as)


def file_source(path: Path) -> FileSource:
    """The row reading ``path``: by suffix, by the path itself (folders), or by first bytes.

    Raises:
        SourceNotFoundError: nothing is there.
        UnsupportedSourceError: a FIFO, socket or device (refused before it is opened, so
            nothing blocks), a folder no row claims, or a file of an unknown kind.
    """
    # a FIFO, socket or device is refused before any row (a sharded set's index included) or
    # the sniffing below opens it, so nothing blocks in open()
    mode = check_regular(path, folders=True).st_mode
    for row in TABLE.files:
        if row.claims is not None and row.claims(path):
            return row
    if stat.S_ISDIR(mode):
        raise UnsupportedSourceError(
            f"is a folder no reader claims; name a model file ({readable_files()})", file=path
        )
    row = _suffix_row(path)
    if row is not None:
        return row
    with open_regular(path) as handle:
        head = handle.read(SNIFF_BYTES)
    for row in TABLE.files:
        if row.sniff is not None and row.sniff(head):
            return row
    suffix = path.suffix.lower() or "(no extension)"
    raise UnsupportedSourceError(
        f"unknown file type {suffix!r}; weightio reads {readable_files()}", file=path
    )


def open_path(path: Path, **options: Any) -> Source:
    """Open a file or folder with its row's reader; every refusal names the path."""
    try:
        return file_source(path).open(path, **options)
    except WeightioError as exc:
        raise exc.with_file(path) from None


def open_object(obj: object, **options: Any) -> Source:
    """Open a live object with its row's reader."""
    row = object_source(obj)
    if row is None:
        readers = ", ".join(dict.fromkeys(r.what for r in TABLE.objects))
        raise UnsupportedSourceError(
            f"cannot read a {type(obj).__module__}.{type(obj).__qualname__}; weightio reads "
            f"{readers}, and files ({readable_files()})"
        )
    return row.open(obj, **options)


def target_named(name: str) -> Target:
    """The target called ``name``; unknown names list the known ones."""
    for row in TABLE.targets:
        if row.name == name:
            return row
    raise UnsupportedSourceError(
        f"unknown target {name!r}; choose {', '.join(t.name for t in TABLE.targets)}"
    )


def target_for(destination: os.PathLike[str] | str) -> Target:
    """The target a destination's suffix names."""
    name = Path(destination).name.lower()
    for row in TABLE.targets:
        if any(name.endswith(suffix) for suffix in row.suffixes):
            return row
    suffixes = "; ".join(f"{'/'.join(t.suffixes)} ({t.what or t.name})" for t in TABLE.targets)
    suffix = Path(destination).suffix.lower() or "no extension"
    raise UnsupportedSourceError(
        f"cannot tell the target from {suffix!r}; use {suffixes}, or pass to=", file=destination
    )


def no_options(options: Mapping[str, Any], what: str, *, allowed: tuple[str, ...] = ()) -> None:
    """Refuse reader options that do not apply to ``what``, naming those that would."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f" (it takes {', '.join(f'{a}=' for a in allowed)})" if allowed else ""
        raise UnsupportedSourceError(f"options {', '.join(unknown)} do not apply to {what}{takes}")
