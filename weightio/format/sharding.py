"""Sharded archives: ``name-0000K-of-0000N.safetensors`` plus ``name.safetensors.index.json``.

The layout transformers and the rest of the ecosystem read: each shard is a plain safetensors
file, and the index maps every tensor to its shard (``{"metadata": {...}, "weight_map": {...}}``).
weightio puts its spec (with every tensor's digest) in the index metadata, next to
``total_size``.

Rewriting a set, the index is the commit point, and no file the index on disk names is ever
changed: at every instant (a kill -9 included) the index on disk names complete shards of *its*
write, so it loads and verifies as the old set or as the new one, never a mix and never a missing
shard. Writing shard K of N:

1. If the current index does not name ``name-0000K-of-0000N.safetensors`` (a first write, or a
   different shard count), the shard is written under that final name directly (atomically).
   If it does (same count: overwriting it would hand the old index a new shard), it is written
   under a generation name ``name-0000K-of-0000N.g<12 hex>.safetensors`` instead.
2. After all shards exist, the index naming them is written atomically: the switch.
3. Generation shards then take their final names: each is hard-linked over the final name
   (``os.link`` to a temp name, then ``os.replace``; the index on disk names the generation file,
   not the final one, so nothing it names changes), the index is rewritten with the final names,
   and the generation names are unlinked. Where the filesystem has no hard links the set simply
   keeps its generation names, which every index-driven reader (transformers, accelerate,
   weightio) accepts.
4. Shards of earlier writes that the new index does not name are removed: those the replaced
   index named, and orphans matching ``name-NNNNN-of-NNNNN[.g<hex>].safetensors`` (a killed
   write's) once they are a minute old, so a concurrent writer's fresh shards are left alone. Other
   files are never touched. A set that now fits in one file replaces the index and its shards the
   same way: the single file is written first, then the index and its shards are removed; and a
   single ``name.safetensors`` is removed once a sharded set replaced it (transformers would load
   it in preference to the index).

Reading trusts nothing in the index: shard names must be plain file names in the index's folder
(no ``..``, no absolute path, no symlink leading elsewhere), every tensor sits in exactly one
shard, and each shard's own header must list exactly the tensors the index gives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightio.errors import (
    ExternalReferenceError,
    MalformedFileError,
    ResourceLimitError,
    SourceNotFoundError,
    SpecValidationError,
    UnsupportedSourceError,
)
from weightio.format.archive import (
    META_FORMAT_VERSION,
    META_SPEC,
    SUPPORTED_MAJOR,
    Archive,
    TensorMap,
    archive_metadata,
    check_header_against_spec,
    spec_with_digests,
)
from weightio.format.hashing import DEFAULT_ALGORITHM
from weightio.format.paths import inside_folder, open_regular
from weightio.format.provenance import provenance
from weightio.format.safetensors import Header, MappedTensors, read_header
from weightio.format.single import save_single, write_streamed
from weightio.spec import spec_from_json
from weightio.spec.json_limits import parse_json

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

INDEX_SUFFIX = ".safetensors.index.json"
#: Largest index file weightio reads (its spec included).
MAX_INDEX_BYTES = 100 * 1024 * 1024
_UNITS = {
    "": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def parse_size(value: int | str) -> int:
    """``"2GB"`` -> 2_000_000_000 (decimal, as transformers), ``"2GiB"`` -> 2 * 2**30, ints as is."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise UnsupportedSourceError(
                f"cannot read shard size {value!r}; write it like 2GB, 500MB, 1GiB or a number "
                "of bytes"
            )
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise UnsupportedSourceError(f"shard size must be positive. Received: {value!r}")
    return size


def shard_names(path: Path, count: int) -> list[Path]:
    """``model.safetensors`` -> ``model-00001-of-0000N.safetensors``, ... (``count`` names)."""
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    return [path.parent / f"{stem}-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]


def index_path(path: Path) -> Path:
    """``model.safetensors`` -> ``model.safetensors.index.json``."""
    name = path.name if path.name.endswith(".safetensors") else f"{path.name}.safetensors"
    return path.parent / f"{name}.index.json"


def plan_shards(sizes: list[tuple[str, int]], limit: int) -> list[list[str]]:
    """Group tensors, in order, into shards of at most ``limit`` bytes (a bigger tensor alone)."""
    shards: list[list[str]] = [[]]
    used = 0
    for key, size in sizes:
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append(key)
        used += size
    return shards


def save_sharded(
    archive: Any, path: Path, max_shard_size: int | str, *, algorithm: str = DEFAULT_ALGORITHM
) -> Path:
    """Write ``archive`` as shards plus index (see the module docstring); return the index path."""
    limit = parse_size(max_shard_size)
    spec = archive.spec
    order = [ref.key for _, _, ref in spec.unique_tensor_refs()]
    sizes = [(key, int(archive.tensors[key].nbytes)) for key in order]
    groups = plan_shards(sizes, limit)
    target = index_path(path)
    live = _named_by_index(target)
    if len(groups) == 1:
        save_single(archive, path, algorithm=algorithm)
        retire_sharded_set(path)  # a sharded set of the same name is stale now
        return path
    generation = secrets.token_hex(6)
    digests: dict[str, str] = {}
    weight_map: dict[str, str] = {}
    staged: dict[str, str] = {}  # generation name -> final name
    for group, file in zip(groups, shard_names(path, len(groups))):
        if file.name in live:  # never change a file the index on disk names
            out = file.with_name(f"{file.name[: -len('.safetensors')]}.g{generation}.safetensors")
            staged[out.name] = file.name
        else:
            out = file
        items = [(key, archive.tensors[key]) for key in group]
        digests.update(write_streamed(out, items, lambda _d: {"format": "pt"}, algorithm=algorithm))
        weight_map.update({key: out.name for key in group})
    final = spec_with_digests(spec, digests)
    metadata = {"total_size": sum(size for _, size in sizes), **archive_metadata(final)}
    _write_index(target, metadata, weight_map)  # the switch to the new set
    if staged and _promote(path.parent, staged):
        weight_map = {key: staged.get(name, name) for key, name in weight_map.items()}
        _write_index(target, metadata, weight_map)
        for name in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.parent / name)
    _remove_unnamed_shards(path, set(weight_map.values()), live)
    if path.name not in weight_map.values() and path.is_file() and not path.is_symlink():
        with contextlib.suppress(FileNotFoundError):  # a single file of the same name is stale
            os.unlink(path)  # now, and transformers would load it before the index
    archive.spec = final
    return target


def retire_sharded_set(path: Path) -> None:
    """After ``path`` was written as one file: remove a sharded set of the same name.

    Its index would shadow the new file when the folder is read (and the set is stale now);
    the index goes first, so no index ever names a removed shard, then the shards it named.
    """
    target = index_path(path)
    if not target.is_file() or target.is_symlink():
        return
    live = _named_by_index(target)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
    _remove_unnamed_shards(path, set(), live)


def _write_index(target: Path, metadata: dict[str, Any], weight_map: dict[str, str]) -> None:
    from weightio.format.atomic import atomic_write

    index = {"metadata": metadata, "weight_map": weight_map}
    with atomic_write(target) as handle:
        handle.write(json.dumps(index, indent=2, ensure_ascii=False).encode())


def _named_by_index(index: Path) -> set[str]:
    """Shard names the index on disk lists; empty when there is none or it is unreadable."""
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            return set()
        data = json.loads(index.read_bytes().decode("utf-8"))
        return {name for name in data["weight_map"].values() if isinstance(name, str)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return set()


def _promote(folder: Path, staged: dict[str, str]) -> bool:
    """Hard-link each generation shard over its final name; False where links are unsupported."""
    from weightio.format.atomic import TEMP_MARKER, fsync_folder, reach

    for source, final in staged.items():
        temp = folder / f".{final}{TEMP_MARKER}{secrets.token_hex(6)}"
        try:
            with contextlib.suppress(FileNotFoundError):  # a replaced file keeps its mode
                os.chmod(folder / source, os.stat(folder / final).st_mode & 0o7777)
            os.link(folder / source, temp)
            os.replace(temp, folder / final)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            return False
        reach("renamed")
    fsync_folder(folder)
    return True


#: Seconds before an orphan shard (named by no index) counts as a killed write's, not a live one's.
_ORPHAN_AGE = 60.0


def _remove_unnamed_shards(path: Path, keep: set[str], replaced: set[str]) -> None:
    """Remove shard files of this set's name that the new index does not name (module doc, 4)."""
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}(?:\.g[0-9a-f]{12})?\.safetensors")
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if entry.name in keep or not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                if not entry.is_file(follow_symlinks=False):
                    continue
                age = now - entry.stat(follow_symlinks=False).st_mtime
                if entry.name in replaced or age > _ORPHAN_AGE:
                    os.unlink(entry.path)


def is_sharded(path: Path) -> bool:
    """An index file, or a folder holding exactly one index file."""
    return path.name.endswith(INDEX_SUFFIX) or (path.is_dir() and len(_indexes(path)) == 1)


def _indexes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(INDEX_SUFFIX))


def find_index(path: Path) -> Path:
    """The index file named by ``path`` (the file itself, or the one in a folder)."""
    if not path.exists():
        raise SourceNotFoundError("no such file or folder", file=path)
    if path.is_dir():
        found = _indexes(path)
        if len(found) != 1:
            raise UnsupportedSourceError(
                f"the folder holds {len(found)} '*{INDEX_SUFFIX}' files; name the index file "
                "of the sharded set to read" + (f" ({', '.join(p.name for p in found)})" if found else ""),
                file=path,
            )
        return found[0]
    return path


#: How often ``ShardedSet`` re-opens a set that a writer keeps replacing before giving up.
_OPEN_ATTEMPTS = 5


def _replaced(index: Path, handle: Any) -> bool:
    """Whether the file at ``index`` is no longer the one open as ``handle``."""
    try:
        now = os.stat(index)
    except OSError:
        return True
    held = os.fstat(handle.fileno())
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


class ShardedSet:
    """A checked index and its shards' checked headers; tensors memory-mapped on access."""

    def __init__(self, path: Path) -> None:
        self.index = find_index(path)
        self.folder = self.index.parent
        if not inside_folder(self.index, self.folder):
            raise ExternalReferenceError(
                "the index is a link to a file outside its folder; weightio reads a sharded set "
                "only from one folder (the shards would be looked for beside the link)",
                file=self.index,
            )
        # A rewrite switches the index by renaming a new one over it and changes shards only
        # after that switch (module docstring). So if the index we read is still the live one
        # once every shard is open (each mapped from its open handle: pinned), those shards are
        # the ones it named. If it was replaced meanwhile, open the set again.
        for _ in range(_OPEN_ATTEMPTS):
            with open_regular(self.index) as handle:  # held open: its inode number stays ours
                try:
                    self._open(handle)
                except (MalformedFileError, ExternalReferenceError, OSError):
                    if not _replaced(self.index, handle):
                        raise
                    continue
                if not _replaced(self.index, handle):
                    return
        raise MalformedFileError(
            f"the set was rewritten {_OPEN_ATTEMPTS} times while it was being opened; open it "
            "again when the writer is done",
            file=self.index,
        )

    def _open(self, handle: Any) -> None:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_INDEX_BYTES:
            raise ResourceLimitError(
                f"index of {size} bytes exceeds the {MAX_INDEX_BYTES}-byte limit", file=self.index
            )
        data = parse_json(handle.read(), file=self.index, what="the index")
        if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
            raise MalformedFileError("index has no 'weight_map' object", file=self.index)
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise MalformedFileError("index 'metadata' is not an object", file=self.index)
        self.metadata: dict[str, Any] = metadata
        self.weight_map: dict[str, str] = {}
        for key, shard in data["weight_map"].items():
            if not isinstance(shard, str):
                raise MalformedFileError("shard names must be strings", file=self.index, tensor=key)
            self.weight_map[key] = shard
        self.headers: dict[str, Header] = {}
        self.mapped: dict[str, MappedTensors] = {}
        for shard in dict.fromkeys(self.weight_map.values()):
            file = self._shard_file(shard)
            try:
                shard_handle = open_regular(file)  # a FIFO or device shard never blocks
            except SourceNotFoundError:
                raise MalformedFileError(f"shard {shard!r} named by the index is missing",
                                         file=self.index) from None
            except UnsupportedSourceError as exc:
                raise MalformedFileError(f"shard {shard!r} {exc.message}", file=self.index) from None
            with shard_handle:
                header = read_header(shard_handle, file)
                self.mapped[shard] = MappedTensors(file, header, shard_handle)
            self.headers[shard] = header
        self._check_shards()

    def _shard_file(self, shard: str) -> Path:
        if (
            not shard
            or "/" in shard
            or "\\" in shard
            or shard in (".", "..")
            or os.path.isabs(shard)
            or not shard.endswith(".safetensors")
        ):
            raise ExternalReferenceError(
                f"shard name {shard!r} is not a plain '.safetensors' file name in the index's "
                "folder; weightio reads shards only from beside the index",
                file=self.index,
            )
        file = self.folder / shard
        if not os.path.lexists(file):
            raise MalformedFileError(f"shard {shard!r} named by the index is missing", file=self.index)
        if not inside_folder(file, self.folder):
            raise ExternalReferenceError(
                f"shard {shard!r} is a link to a file outside the index's folder", file=self.index
            )
        return file

    def _check_shards(self) -> None:
        seen: dict[str, str] = {}
        for shard, header in self.headers.items():
            for key in header.entries:
                if key in seen:
                    raise MalformedFileError(
                        f"tensor is stored in two shards, {seen[key]!r} and {shard!r}",
                        file=self.index,
                        tensor=key,
                    )
                seen[key] = shard
                if self.weight_map.get(key) != shard:
                    raise MalformedFileError(
                        f"shard {shard!r} holds a tensor the index places in "
                        f"{self.weight_map.get(key)!r}",
                        file=self.index,
                        tensor=key,
                    )
        missing = [key for key in self.weight_map if key not in seen]
        if missing:
            raise MalformedFileError(
                f"{len(missing)} tensor(s) named by the index are in no shard: "
                f"{', '.join(missing[:10])}",
                file=self.index,
                tensor=missing[0],
            )

    def get(self, key: str) -> np.ndarray:
        """Tensor ``key``, memory-mapped from its shard."""
        return self.mapped[self.weight_map[key]].get(key)

    def entries(self) -> dict[str, Any]:
        """Every tensor's header entry, in index order."""
        return {key: self.headers[shard].entries[key] for key, shard in self.weight_map.items()}


def load_sharded(path: Path, *, verify: bool = False) -> Any:
    """Open a sharded weightio archive (index file or folder) like ``weightio.load``."""
    shards = ShardedSet(path)
    meta = shards.metadata
    if not isinstance(meta.get(META_SPEC), str):
        raise MalformedFileError(
            "this sharded set carries no weightio spec (a plain sharded state dict?); import it "
            "with weightio.read() or `weightio convert`",
            file=shards.index,
        )
    version = meta.get(META_FORMAT_VERSION)
    if not isinstance(version, str) or version.split(".")[0] != SUPPORTED_MAJOR:
        raise SpecValidationError(
            f"index metadata has format version {version!r}; this weightio reads "
            f"{SUPPORTED_MAJOR}.x",
            file=shards.index,
        )
    spec = spec_from_json(meta[META_SPEC], file=shards.index)
    check_header_against_spec(spec, shards.entries(), shards.index)
    archive = Archive(spec, TensorMap(list(shards.weight_map), shards.get), path=shards.index)
    if verify:
        archive.verify()
    return archive


def read_sharded(path: Path, **options: Any) -> Any:
    """A sharded weightio archive loads as itself; a plain sharded state dict reads weights-only."""
    shards = ShardedSet(path)
    if isinstance(shards.metadata.get(META_SPEC), str):
        if options:
            raise UnsupportedSourceError(
                f"options {', '.join(sorted(options))} do not apply to a weightio archive"
            )
        return load_sharded(path)
    from weightio.format.weights_only import archive_from_state_dict

    arrays: Mapping[str, np.ndarray] = {key: shards.get(key) for key in shards.weight_map}
    name = shards.index.name[: -len(INDEX_SUFFIX)] or "state_dict"
    return archive_from_state_dict(
        arrays,
        name=options.get("name", name),
        provenance=provenance("safetensors", framework_version=None, source_class=None),
    )
