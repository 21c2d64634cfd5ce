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


#: The largest ``config.json`` a Hugging Face folder may hold (real ones are a few KB).
HF_CONFIG_LIMIT = 4 * 1024 * 1024
HF_WEIGHTS = "model.safetensors"


def _is_hf_folder(path: Path) -> bool:
    """A Hugging Face model folder: ``config.json`` beside ``model.safetensors`` or a sharded
    ``model.safetensors.index.json``.
    """
    return path.is_dir() and (path / "config.json").is_file() and (
        (path / HF_WEIGHTS).is_file() or (path / (HF_WEIGHTS + ".index.json")).is_file()
    )


def _open_hf_folder(path: Path, **options: Any) -> Source:
    """The folder's weights (weights only: the architecture is ``transformers``' code, named
    by the config), with the config kept in ``spec.extra["huggingface"]``.
    """
    from weightio.errors import ResourceLimitError
    from weightio.format.paths import open_regular
    from weightio.spec.json_limits import parse_json

    no_options(options, "a Hugging Face model folder")
    config_path = path / "config.json"
    with open_regular(config_path) as handle:
        raw = handle.read(HF_CONFIG_LIMIT + 1)
    if len(raw) > HF_CONFIG_LIMIT:
        raise ResourceLimitError(
            f"config.json is over {HF_CONFIG_LIMIT // 2**20} MiB; real ones are a few KB",
            file=config_path,
        )
    config = parse_json(raw, file=config_path, what="config.json")
    if not isinstance(config, dict):
        from weightio.errors import MalformedFileError

        raise MalformedFileError("config.json is not a JSON object", file=config_path)
    sharded = path / (HF_WEIGHTS + ".index.json")
    if (path / HF_WEIGHTS).is_file():
        archive = _open_safetensors(path / HF_WEIGHTS, name=path.name).archive
    else:
        archive = read_sharded(sharded, name=path.name)
    architectures = config.get("architectures")
    source_class = (f"transformers.{architectures[0]}" if isinstance(architectures, list)
                    and architectures and isinstance(architectures[0], str) else None)
    spec = archive.spec
    provenance_update = {"source_framework": "torch", "source_class": source_class}
    extra = {**spec.extra, "huggingface": {"config": config}}
    return Source(archive.with_spec(spec.model_copy(update={
        "provenance": spec.provenance.model_copy(update=provenance_update), "extra": extra,
    })), "weightio", not_run="a Hugging Face folder holds weights and a config, not code to run")


def _is_safetensors(head: bytes) -> bool:
    """8-byte little-endian header length, then the JSON header's opening brace."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _build_archive(archive: Archive, **options: Any) -> tuple[Any, None]:
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
        "Hugging Face model folders",
        _open_hf_folder,
        claims=_is_hf_folder,
        listed_as="Hugging Face model folders (config.json + model.safetensors)",
    ),
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
