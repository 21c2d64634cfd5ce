"""The archive: a ``ModelSpec`` plus its tensors, stored as one standard ``.safetensors`` file.

The spec travels as JSON in the header's ``__metadata__`` under ``weightio.spec``, next to
``weightio.format_version``; tensors are named ``<layer>.<param>`` in canonical layout. Any
safetensors reader gets the tensors; weightio also gets the model. Loading reads the header only;
tensor bytes are memory-mapped and touched when used.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightio.errors import (
    IntegrityError,
    MalformedFileError,
    SpecValidationError,
    UnsupportedDtypeError,
)
from weightio.format.hashing import DEFAULT_ALGORITHM, hash_bytes, new_hasher, split
from weightio.spec.dtypes import as_little_endian, dtype_name, tensor_bytes
from weightio.spec.model import FORMAT_VERSION, ModelSpec
from weightio.spec.serialization import spec_from_json
from weightio.spec.tensors import TensorRef

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np  # imported where arrays are made: opening an archive needs no numpy

META_FORMAT_VERSION = "weightio.format_version"
META_SPEC = "weightio.spec"
SUPPORTED_MAJOR = FORMAT_VERSION.split(".")[0]


class TensorMap(Mapping[str, "np.ndarray"]):
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


def digest_of(array: np.ndarray, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """The tagged digest (``"blake3:<hex>"``, ``"sha256:<hex>"``) of a tensor's stored bytes."""
    return hash_bytes(tensor_bytes(array), algorithm)


#: ``verify`` hashes a tensor this many bytes at a time, giving each window's mapped pages back.
_VERIFY_WINDOW = 16 * 1024 * 1024


def _check_digest(array: np.ndarray, recorded: str) -> bool:
    """Whether ``array``'s bytes have the ``recorded`` digest; its mapped pages are given back
    window by window, so a worker holds at most one window of the file resident.
    """
    import numpy as np

    from weightio.format.streaming import release

    algorithm = split(recorded)[0]
    data = tensor_bytes(array)
    hasher = new_hasher(algorithm, len(data))
    try:
        for start in range(0, len(data), _VERIFY_WINDOW):
            window = data[start : start + _VERIFY_WINDOW]
            hasher.update(window)
            release(np.frombuffer(window, dtype=np.uint8))
    finally:
        release(array)
    return f"{algorithm}:{hasher.hexdigest()}" == recorded


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
        checked: bool = False,
    ) -> None:
        """``checked=True``: the caller compared ``spec`` with the tensors' header entries
        already (``check_header_against_spec``), so they are not made into arrays to check again.
        """
        self.spec = spec
        self.path = path
        #: The URL of an archive in object storage (``weightio.format.remote``), tensors fetched on use.
        self.url: str | None = None
        if isinstance(tensors, TensorMap):
            stored: Mapping[str, np.ndarray] = tensors
        else:
            import numpy as np

            arrays = {name: _frozen(as_little_endian(np.asarray(a))) for name, a in tensors.items()}
            stored = TensorMap(list(arrays), arrays.__getitem__)
        if not (checked and isinstance(tensors, TensorMap)):
            check_spec_against_tensors(spec, stored, file=path)
        #: The tensors as the file holds them (encoded parameters as stored, with their scales).
        self.stored = stored
        #: Every parameter by key, decoded: what the runtime and the writers compute with.
        self.tensors: Mapping[str, np.ndarray] = stored if not spec.encoded else _decoded(spec, stored)

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
        """Total number of parameter elements (a shared tensor counted once)."""
        return sum(math.prod(ref.shape) for _, _, ref in self.spec.unique_tensor_refs())

    def replace(self, tensors: Mapping[str, Any]) -> Archive:
        """A new archive with some tensors replaced; this one is unchanged (archives are immutable).

        Each replacement keeps its tensor's key, shape and dtype (``weightio.cast`` changes
        dtypes; nothing is cast here). The replaced tensors' digests are cleared, so saving the
        new archive records new ones; the verification record is dropped, as it proved the old
        weights; ``provenance.transforms`` says which tensors were replaced.

        Raises:
            SpecValidationError: a key the archive does not hold, or a shape that differs.
            UnsupportedDtypeError: a replacement of another dtype.
        """
        import numpy as np

        refs = {ref.key: ref for _, _, ref in self.spec.tensor_refs()}
        arrays: dict[str, np.ndarray] = {}
        for key, value in tensors.items():
            if key not in refs:
                raise SpecValidationError(
                    "the archive holds no such tensor to replace; its tensors are "
                    + ", ".join(list(refs)[:20]), file=self.path, tensor=key,
                )
            array = np.asarray(value)
            got = dtype_name(array.dtype, tensor=key)
            if got != refs[key].dtype:
                raise UnsupportedDtypeError(
                    f"the replacement is {got}, the tensor {refs[key].dtype}; weightio never "
                    "casts silently: give an array of the same dtype, or cast with weightio.cast",
                    file=self.path, tensor=key,
                )
            if tuple(array.shape) != tuple(refs[key].shape):
                raise SpecValidationError(
                    f"the replacement has shape {list(array.shape)}, the tensor "
                    f"{list(refs[key].shape)}; replace keeps every shape", file=self.path, tensor=key,
                )
            arrays[key] = array
        layers = with_refs(self.spec, lambda ref: ref.model_copy(update={"digest": None, "sha256": None})
                           if ref.key in arrays else ref)
        shown = ", ".join(list(arrays)[:8]) + (f" and {len(arrays) - 8} more" if len(arrays) > 8 else "")
        provenance = self.spec.provenance.model_copy(update={
            "transforms": [*self.spec.provenance.transforms, f"replaced {len(arrays)} tensor(s): {shown}"]
        })
        spec = ModelSpec.model_validate(self.spec.model_copy(update={
            "layers": layers, "verification": [], "provenance": provenance,
        }).model_dump())
        merged = {key: arrays.get(key, self.stored[key]) for key in self.stored}
        return Archive(spec, merged)

    def with_spec(self, spec: ModelSpec) -> Archive:
        """Return an archive with the same tensors and a new spec (validated against them)."""
        return Archive(spec, self.stored, path=self.path)

    def verify(self, *, progress: bool = False) -> list[str]:
        """Check every tensor against the digest recorded for it; return the names checked.

        ``progress``: a bar on stderr for archives over a few hundred MB.

        Each tensor is checked with the algorithm its digest names (BLAKE3, or sha256 for
        archives written with ``digest="sha256"`` and every format 1.0 archive). Tensors are
        hashed on all cores (BLAKE3 splits a large tensor itself; small ones go to a pool of
        threads) and each one's mapped pages are given back once hashed, so memory stays flat.

        Raises:
            IntegrityError: naming every tensor whose bytes differ from when it was archived.
        """
        refs = [ref for _, _, ref in self.spec.stored_refs()]
        for ref in refs:
            if ref.recorded_digest() is None:
                raise IntegrityError(
                    "no digest was recorded for this tensor; save the archive to record them",
                    file=self.path,
                    tensor=ref.key,
                )
        from weightio.progress import byte_progress
        from weightio.spec.dtypes import itemsize

        workers = max(1, min(4, os.cpu_count() or 1))
        total = sum(math.prod(ref.shape) * itemsize(ref.dtype) for ref in refs)
        with byte_progress("verify", total, enabled=progress) as advance:

            def check(ref: TensorRef) -> bool:
                ok = _check_digest(self.stored[ref.key], ref.recorded_digest())
                advance(math.prod(ref.shape) * itemsize(ref.dtype))  # rich's bar takes threads
                return ok

            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(check, refs))
        bad = [ref.key for ref, ok in zip(refs, results) if not ok]
        if bad:
            algorithms = "/".join(sorted({split(r.recorded_digest())[0] for r in refs if r.key in bad}))
            raise IntegrityError(
                f"{len(bad)} tensor(s) do not match their recorded {algorithms} digest: "
                f"{', '.join(bad)}; the file is corrupt or was modified, re-create it from the source",
                file=self.path,
                tensor=bad[0],
            )
        return [ref.key for ref in refs]

    def digest_algorithms(self) -> list[str]:
        """The algorithms of the digests recorded for the tensors (``[]`` before a save)."""
        found = {split(d)[0] for _, _, ref in self.spec.stored_refs() if (d := ref.recorded_digest())}
        return sorted(found)


def _decoded(spec: ModelSpec, stored: Mapping[str, np.ndarray]) -> TensorMap:
    """The parameters of ``spec`` by key, encoded ones decoded on access (format 1.2)."""
    from weightio.format.encoding import decode

    refs = {ref.key: ref for _, _, ref in spec.tensor_refs()}
    return TensorMap(list(refs), lambda key: _frozen(decode(refs[key], stored)))


def plain(archive: Archive, *, keep: tuple[str, ...] = ()) -> Archive:
    """``archive`` with every encoded parameter (format 1.2) stored decoded, as a plain float
    tensor: what the writers build from, so a quantised archive converts like any other.

    ``keep``: encoding schemes left encoded, for a writer that builds them as they are (the
    torch writer's weight norm; its int8 modules with ``keep_int8``).
    """
    if not any(ref.encoding is not None and ref.encoding.scheme not in keep
               for _, _, ref in archive.spec.tensor_refs()):
        return archive

    def decoded(ref: Any) -> Any:
        if ref.encoding is None or ref.encoding.scheme in keep:
            return ref
        return ref.model_copy(update={"encoding": None, "digest": None})

    layers = with_refs(archive.spec, decoded)
    spec = ModelSpec.model_validate(archive.spec.model_copy(update={"layers": layers}).model_dump())
    arrays = {}
    for _, _, ref in spec.tensor_refs():
        if ref.encoding is None:
            arrays[ref.key] = archive.tensors[ref.key]
        else:  # kept encoded: its stored values, scale (and zero point) as the file holds them
            arrays.update((part.key, archive.stored[part.key]) for part in ref.stored_refs())
    return Archive(spec, arrays)


def check_spec_against_tensors(
    spec: ModelSpec, tensors: Mapping[str, np.ndarray], *, file: object | None
) -> None:
    """Refuse a spec that disagrees with the arrays beside it (missing, extra, shape, dtype)."""
    problems: list[str] = []
    referenced: set[str] = set()
    for layer, param, ref in spec.stored_refs():
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


def with_refs(spec: ModelSpec, change: Any) -> list[Any]:
    """``spec``'s layers with each tensor reference replaced by ``change(ref)`` (an opaque
    layer keeps its references in ``tensors``, every other kind in named fields).
    """
    layers = []
    for layer in spec.layers:
        refs = {param: change(ref) for param, ref in layer.tensor_refs().items()}
        updates: dict[str, Any] = (
            {"tensors": refs} if getattr(layer, "kind", None) == "opaque" else refs
        )
        layers.append(layer.model_copy(update=updates) if refs else layer)
    return layers


def spec_with_digests(spec: ModelSpec, digests: Mapping[str, str]) -> ModelSpec:
    """Return ``spec`` with each tensor's ``digest`` set from ``digests`` (re-validated).

    ``digests`` holds tagged digests (``"blake3:<hex>"``). A format 1.0 ``sha256`` is dropped
    (the tensor now records ``digest``) and the spec takes the current format version.
    """
    def digested(ref: TensorRef) -> TensorRef:
        update: dict[str, Any] = {"digest": digests[ref.key], "sha256": None}
        if ref.encoding is not None:
            encoding = ref.encoding
            update["encoding"] = encoding.model_copy(update={
                "scale": digested(encoding.scale),
                "zero_point": None if encoding.zero_point is None else digested(encoding.zero_point),
            })
        return ref.model_copy(update=update)

    layers = with_refs(spec, digested)
    updated = spec.model_copy(update={"layers": layers, "format_version": FORMAT_VERSION})
    return ModelSpec.model_validate(updated.model_dump())  # re-validate the updated copy


def archive_metadata(spec: ModelSpec) -> dict[str, str]:
    """The ``__metadata__`` (or shard index ``metadata``) carrying ``spec``."""
    return {META_FORMAT_VERSION: FORMAT_VERSION, META_SPEC: spec.model_dump_json(exclude_none=True)}


def check_header_against_spec(spec: ModelSpec, entries: Mapping[str, Any], path: Path) -> None:
    """Compare the spec with the header alone, so a bad archive fails before any data is read."""
    problems: list[str] = []
    referenced: set[str] = set()
    first_layer = None
    for layer, param, ref in spec.stored_refs():
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


def spec_of_header(header: Any, path: object) -> ModelSpec:
    """The spec an archive's header carries, its format version checked.

    Raises:
        MalformedFileError: the header carries no weightio spec (a plain safetensors file).
        SpecValidationError: no format version, one of another major, or an invalid spec.
    """
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
    return spec_from_json(meta[META_SPEC], file=path)
