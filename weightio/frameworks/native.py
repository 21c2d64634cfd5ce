"""weightio's own sources and target: archives, sharded sets, plain safetensors, dicts of arrays.

Rows of the table in ``weightio.frameworks.table``; nothing here needs a framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightio.format.archive import META_SPEC, Archive
from weightio.format.provenance import provenance
from weightio.format.safetensors import MappedTensors, read_header
from weightio.format.sharding import INDEX_SUFFIX, is_sharded, read_sharded
from weightio.format.store import load, save
from weightio.format.weights_only import archive_from_state_dict
from weightio.frameworks.table import FileSource, ObjectSource, Source, Target, no_options


def _open_archive(archive: Archive, **options: Any) -> Source:
    no_options(options, "a weightio archive")
    return Source(archive, "weightio")


def _is_array_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(value, np.ndarray) for value in obj.values())
    )


def _open_array_dict(state_dict: Mapping[str, np.ndarray], **options: Any) -> Source:
    """A dict of numpy arrays: a weights-only archive, with no framework involved."""
    no_options(options, "a dict of arrays", allowed=("name",))
    archive = archive_from_state_dict(
        state_dict,
        name=options.get("name", "state_dict"),
        provenance=provenance("unknown", framework_version=None, source_class="dict"),
    )
    return Source(archive, "weightio")


def _open_safetensors(path: Path, **options: Any) -> Source:
    """A weightio archive loads as itself; a plain safetensors state dict reads weights-only."""
    with open(path, "rb") as handle:
        header = read_header(handle, path)
        mapped = MappedTensors(path, header, handle)  # pinned: a rewrite cannot mix in
    if META_SPEC in header.metadata:
        no_options(options, "a weightio archive")
        return Source(load(path), "weightio")
    arrays = {name: mapped.get(name) for name in header.entries}
    archive = archive_from_state_dict(
        arrays,
        name=options.get("name", path.stem),
        provenance=provenance(
            "safetensors", framework_version=None, source_class=None, source_file=path
        ),
    )
    return Source(archive, "weightio")


def _open_sharded(path: Path, **options: Any) -> Source:
    return Source(read_sharded(path, **options), "weightio")


def _is_safetensors(head: bytes) -> bool:
    """8-byte little-endian header length, then the JSON header's opening brace."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _build_archive(archive: Archive) -> tuple[Any, None]:
    return None, None


def _write_archive(archive: Archive, native: Any, destination: Path, **options: Any) -> Path:
    return save(
        archive,
        destination,
        max_shard_size=options.get("max_shard_size"),
        source_digest=options.get("source_digest"),
        overwrite=options.get("overwrite", True),
        digest=options.get("digest"),
    )


#: This package's rows of the table, registered in order by ``weightio.frameworks``.
ROWS = (
    ObjectSource(
        "weightio", "weightio archives", lambda obj: isinstance(obj, Archive), _open_archive
    ),
    ObjectSource("weightio", "dicts of numpy arrays", _is_array_dict, _open_array_dict),
    FileSource(
        "weightio",
        "sharded sets",
        _open_sharded,
        claims=is_sharded,
        listed_as=f"sharded sets (*{INDEX_SUFFIX} or their folder)",
    ),
    FileSource(
        "weightio",
        "safetensors files",
        _open_safetensors,
        suffixes=(".safetensors",),
        sniff=_is_safetensors,
        listed_as=".safetensors",
    ),
    Target(
        "archive",
        "weightio",
        (".safetensors",),
        _build_archive,
        _write_archive,
        weights_only=True,
        what="archive",
    ),
)
