"""The archive: a ``ModelSpec`` plus its tensors, stored as one standard ``.safetensors`` file.

The spec travels as JSON in the header's ``__metadata__`` under ``weightio.spec``, next to
``weightio.format_version``; tensors are named ``<layer>.<param>`` in canonical layout. Any
safetensors reader gets the tensors; weightio also gets the model. Loading reads the header only;
tensor bytes are memory-mapped and touched when used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightio.atomic import atomic_write
from weightio.dtypes import as_little_endian, dtype_name
from weightio.errors import (
    IntegrityError,
    MalformedFileError,
    SourceNotFoundError,
    SpecValidationError,
)
from weightio.safetensors_io import MappedTensors, build_header, read_header, tensor_bytes
from weightio.spec import FORMAT_VERSION, ModelSpec, TensorRef, spec_from_json

META_FORMAT_VERSION = "weightio.format_version"
META_SPEC = "weightio.spec"
SUPPORTED_MAJOR = FORMAT_VERSION.split(".")[0]


class TensorMap(Mapping[str, np.ndarray]):
    """A read-only mapping from tensor name to numpy array; arrays are read-only too."""

    def __init__(self, names: list[str], getter: Any) -> None:
        self._names = list(names)
        self._index = set(self._names)
        self._getter = getter

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._index:
            raise KeyError(name)
        return self._getter(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"TensorMap({len(self)} tensors)"


def _frozen(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.setflags(write=False)
    return view


def sha256_of(array: np.ndarray) -> str:
    """Hex sha256 of a tensor's stored bytes (C order, little-endian)."""
    digest = hashlib.sha256()
    data = tensor_bytes(array)
    step = 16 * 1024 * 1024
    for start in range(0, len(data), step):
        digest.update(data[start : start + step])
    return digest.hexdigest()


class Archive:
    """A model in neutral form: ``spec`` (a validated ``ModelSpec``) and ``tensors``.

    Build one from arrays with ``Archive(spec, arrays)``; every tensor the spec references must
    be present with the declared shape and dtype, and no other. ``weightio.load`` returns one
    backed by a memory-mapped file.
    """

    def __init__(
        self,
        spec: ModelSpec,
        tensors: Mapping[str, np.ndarray],
        *,
        path: Path | None = None,
    ) -> None:
        self.spec = spec
        self.path = path
        if isinstance(tensors, TensorMap):
            self.tensors: Mapping[str, np.ndarray] = tensors
        else:
            arrays = {name: _frozen(as_little_endian(np.asarray(a))) for name, a in tensors.items()}
            self.tensors = TensorMap(list(arrays), arrays.__getitem__)
        _check_spec_against_tensors(spec, self.tensors, file=path)

    def __repr__(self) -> str:
        where = f", path='{self.path}'" if self.path else ""
        return (
            f"Archive(name={self.spec.name!r}, layers={len(self.spec.layers)}, "
            f"tensors={len(self.tensors)}{where})"
        )

    def tensor(self, layer: str, param: str) -> np.ndarray:
        """Return the array of ``param`` of ``layer`` (canonical names)."""
        ref = self.spec.layer(layer).tensor_refs()[param]
        return self.tensors[ref.key]

    @property
    def parameter_count(self) -> int:
        """Total number of parameter elements."""
        return sum(int(np.prod(ref.shape)) for _, _, ref in self.spec.tensor_refs())

    def with_spec(self, spec: ModelSpec) -> Archive:
        """Return an archive with the same tensors and a new spec (validated against them)."""
        return Archive(spec, self.tensors, path=self.path)

    def verify(self) -> list[str]:
        """Check every tensor against its recorded sha256; return the names checked.

        Raises:
            IntegrityError: naming every tensor whose bytes differ from when it was archived.
        """
        bad: list[str] = []
        checked: list[str] = []
        for _, _, ref in self.spec.tensor_refs():
            if ref.sha256 is None:
                raise IntegrityError(
                    "no checksum was recorded for this tensor; save the archive to record them",
                    file=self.path,
                    tensor=ref.key,
                )
            if sha256_of(self.tensors[ref.key]) != ref.sha256:
                bad.append(ref.key)
            checked.append(ref.key)
        if bad:
            raise IntegrityError(
                f"{len(bad)} tensor(s) do not match their recorded sha256: {', '.join(bad)}; "
                "the file is corrupt or was modified, re-create it from the source",
                file=self.path,
                tensor=bad[0],
            )
        return checked


def _check_spec_against_tensors(
    spec: ModelSpec, tensors: Mapping[str, np.ndarray], *, file: object | None
) -> None:
    problems: list[str] = []
    referenced: set[str] = set()
    for layer, param, ref in spec.tensor_refs():
        referenced.add(ref.key)
        if ref.key not in tensors:
            problems.append(f"layer {layer.name!r} {param}: tensor {ref.key!r} is missing")
            continue
        array = tensors[ref.key]
        if tuple(array.shape) != tuple(ref.shape):
            problems.append(
                f"layer {layer.name!r} {param}: spec says shape {list(ref.shape)}, "
                f"tensor {ref.key!r} has {list(array.shape)}"
            )
        name = dtype_name(array.dtype, tensor=ref.key)
        if name != ref.dtype:
            problems.append(
                f"layer {layer.name!r} {param}: spec says dtype {ref.dtype}, "
                f"tensor {ref.key!r} is {name}"
            )
    extra = [key for key in tensors if key not in referenced]
    if extra:
        problems.append(f"tensors not referenced by any layer: {', '.join(extra[:10])}")
    if problems:
        raise SpecValidationError(
            "spec and tensors disagree: " + "; ".join(problems),
            file=file,
            layer=_first_layer(problems),
        )


def _first_layer(problems: list[str]) -> str | None:
    first = problems[0]
    if first.startswith("layer '"):
        return first.split("'")[1]
    return None


def spec_with_digests(spec: ModelSpec, digests: Mapping[str, str]) -> ModelSpec:
    """Return ``spec`` with each tensor's ``sha256`` set from ``digests`` (re-validated)."""
    layers = []
    for layer in spec.layers:
        hashed = {
            param: ref.model_copy(update={"sha256": digests[ref.key]})
            for param, ref in layer.tensor_refs().items()
        }
        updates: dict[str, Any] = (
            {"tensors": hashed} if getattr(layer, "kind", None) == "opaque" else hashed
        )
        layers.append(layer.model_copy(update=updates))
    updated = spec.model_copy(update={"layers": layers})
    return ModelSpec.model_validate(updated.model_dump())  # re-validate the updated copy


def archive_metadata(spec: ModelSpec) -> dict[str, str]:
    """The ``__metadata__`` (or shard index ``metadata``) carrying ``spec``."""
    return {META_FORMAT_VERSION: FORMAT_VERSION, META_SPEC: spec.model_dump_json(exclude_none=True)}


def write_streamed(
    path: Path,
    items: list[tuple[str, np.ndarray]],
    metadata_for: Any,
    *,
    before_final: Any = None,
    overwrite: bool = True,
) -> dict[str, str]:
    """Write one safetensors file tensor by tensor, hashing as it goes; return the digests.

    The header is laid out with placeholder digests (hex sha256 has a fixed length, so the real
    header has exactly the same length), the tensors are written and hashed in one pass, and the
    real header is written over the placeholder before the atomic rename. ``metadata_for`` maps
    ``{tensor: sha256}`` to the header metadata; ``before_final()``, if given, runs after the
    tensors are written and before the final metadata is built (``save`` waits there for a source
    digest computed alongside the copy).
    """
    from weightio.atomic import reach
    from weightio.errors import WriteError
    from weightio.streaming import write_hashed

    placeholder, ordered = build_header(items, metadata_for({k: "0" * 64 for k, _ in items}))
    with atomic_write(path, overwrite=overwrite) as handle:
        handle.write(placeholder)
        handle.flush()  # the header reaches the file now (one syscall), as the fault tests expect
        reach("header-written")
        digests = write_hashed(handle, ordered)
        if before_final is not None:
            before_final()
        final, _ = build_header(ordered, metadata_for(digests))
        if len(final) != len(placeholder):  # pragma: no cover - the digests have fixed length
            raise WriteError("internal error: header length changed while writing", file=path)
        handle.seek(0)
        handle.write(final)
    return digests


def save(
    archive: Archive,
    path: os.PathLike[str] | str,
    *,
    max_shard_size: int | str | None = None,
    source_sha256: Any = None,
    overwrite: bool = True,
) -> Path:
    """Write ``archive`` to ``path`` atomically, recording each tensor's sha256 in the spec.

    Tensors are written one at a time and hashed as they are written, so memory stays near the
    largest tensor however large the model.

    Args:
        archive: The archive to write.
        path: Target ``.safetensors`` file.
        max_shard_size: Split into ``name-0000K-of-0000N.safetensors`` shards of at most this
            size (bytes, or a string like ``"2GB"``/``"500MiB"``) plus
            ``name.safetensors.index.json`` holding the spec; a model that fits in one shard is
            written as a single file, as transformers does.
        source_sha256: A ``weightio.source_digest.PendingDigest`` of the source file, still
            being computed (``convert`` starts it when it opens the source); it is awaited after
            the tensors are written and recorded as ``provenance.source_sha256``.
        overwrite: ``False`` refuses to replace an existing file with ``TargetExistsError``,
            checked before anything is written and again, atomically, when the file is
            published (``os.link``): of several writers racing for one new name, one wins.

    Returns:
        The path written (the index file when sharded).
    """
    path = Path(path)
    spec = archive.spec
    if source_sha256 is not None and spec.provenance is None:
        source_sha256 = None
    if not overwrite:
        refuse_existing(path)
    if max_shard_size is not None:
        from weightio.sharding import save_sharded

        if source_sha256 is not None:  # the index is written after the shards anyway
            archive.spec = _with_source_sha256(spec, source_sha256.result())
        return save_sharded(archive, path, max_shard_size)
    if source_sha256 is not None:  # same length as the real digest: the layout does not change
        spec = _with_source_sha256(spec, "0" * 64)
    order = [ref.key for _, _, ref in spec.tensor_refs()]
    items = [(key, archive.tensors[key]) for key in order]

    def resolve_source() -> None:
        nonlocal spec
        if source_sha256 is not None and spec.provenance is not None:
            spec = _with_source_sha256(spec, source_sha256.result())

    digests = write_streamed(
        path, items, lambda d: archive_metadata(spec_with_digests(spec, d)),
        before_final=resolve_source, overwrite=overwrite,
    )
    archive.spec = spec_with_digests(spec, digests)
    from weightio.sharding import retire_sharded_set

    retire_sharded_set(path)
    return path


def refuse_existing(path: Path, *, sharded_too: bool = True) -> None:
    """For ``overwrite=False``: ``TargetExistsError`` if ``path`` exists or, with
    ``sharded_too``, a sharded set named after it (writing ``path`` would replace that set).
    """
    from weightio.errors import TargetExistsError
    from weightio.sharding import INDEX_SUFFIX, index_path

    for existing in (path, index_path(path)) if sharded_too else (path,):
        if os.path.lexists(existing):
            raise TargetExistsError(
                f"already exists and overwrite=False (--no-overwrite; a sharded set is named by "
                f"its '{INDEX_SUFFIX}'); remove it, pick another name or allow overwriting",
                file=existing)


def _with_source_sha256(spec: ModelSpec, digest: str) -> ModelSpec:
    provenance = spec.provenance.model_copy(update={"source_sha256": digest})
    return spec.model_copy(update={"provenance": provenance})


def load(path: os.PathLike[str] | str, *, verify: bool = False) -> Archive:
    """Open a weightio archive: the header is read now, tensors are mapped and read on use.

    Args:
        path: A ``.safetensors`` file written by weightio.
        verify: Also check every tensor's sha256 now (reads all the bytes).

    Raises:
        SourceNotFoundError: no such file.
        MalformedFileError: not a safetensors file, or not a weightio archive.
        SpecValidationError: the spec is invalid or disagrees with the header.
        IntegrityError: with ``verify=True``, a tensor's bytes changed.
    """
    path = Path(path)
    from weightio.sharding import is_sharded, load_sharded

    if is_sharded(path):
        return load_sharded(path, verify=verify)
    if not path.is_file():
        raise SourceNotFoundError("no such archive file", file=path)
    with open(path, "rb") as handle:  # mapped from this very handle: a rewrite cannot mix in
        header = read_header(handle, path)
        mapped = MappedTensors(path, header, handle)
    meta = header.metadata
    if META_SPEC not in meta:
        raise MalformedFileError(
            "this safetensors file carries no weightio spec (a plain state dict?); "
            "import it with weightio.read() or `weightio convert`",
            file=path,
        )
    version = meta.get(META_FORMAT_VERSION)
    if version is None:
        raise SpecValidationError(f"header metadata lacks {META_FORMAT_VERSION!r}", file=path)
    if version.split(".")[0] != SUPPORTED_MAJOR:
        raise SpecValidationError(
            f"archive format {version} is not readable by this weightio (reads "
            f"{SUPPORTED_MAJOR}.x); upgrade weightio",
            file=path,
        )
    spec = spec_from_json(meta[META_SPEC], file=path)
    tensors = TensorMap(list(header.entries), mapped.get)
    _check_header_against_spec(spec, header.entries, path)
    archive = Archive(spec, tensors, path=path)
    if verify:
        archive.verify()
    return archive


def _check_header_against_spec(spec: ModelSpec, entries: Mapping[str, Any], path: Path) -> None:
    """Compare the spec with the header alone, so a bad archive fails before any data is read."""
    problems: list[str] = []
    referenced: set[str] = set()
    first_layer = None
    for layer, param, ref in spec.tensor_refs():
        referenced.add(ref.key)
        entry = entries.get(ref.key)
        if entry is None:
            problems.append(f"layer {layer.name!r} {param}: tensor {ref.key!r} is missing")
        elif entry.dtype != ref.dtype or tuple(entry.shape) != tuple(ref.shape):
            problems.append(
                f"layer {layer.name!r} {param}: spec says {ref.describe()}, "
                f"file holds {entry.dtype}{list(entry.shape)}"
            )
        else:
            continue
        first_layer = first_layer or layer.name
    extra = [key for key in entries if key not in referenced]
    if extra:
        problems.append(f"tensors not referenced by any layer: {', '.join(extra[:10])}")
    if problems:
        raise SpecValidationError(
            "spec and tensors disagree: " + "; ".join(problems), file=path, layer=first_layer
        )


def tensor_ref(key: str, array: np.ndarray) -> TensorRef:
    """Make the ``TensorRef`` describing ``array`` stored under ``key``."""
    return TensorRef(key=key, shape=tuple(int(d) for d in array.shape), dtype=dtype_name(array.dtype, tensor=key))
