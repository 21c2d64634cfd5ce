"""One archive file: written tensor by tensor and hashed as it goes, or opened header first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightio.errors import WriteError
from weightio.format.archive import (
    META_SPEC,
    Archive,
    TensorMap,
    archive_metadata,
    check_header_against_spec,
    spec_of_header,
    spec_with_digests,
)
from weightio.format.atomic import atomic_write, reach
from weightio.format.hashing import DEFAULT_ALGORITHM, placeholder
from weightio.format.paths import open_regular
from weightio.format.safetensors import MappedTensors, build_header, read_header
from weightio.format.streaming import write_hashed
from weightio.spec.model import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def write_streamed(
    path: Path,
    items: list[tuple[str, np.ndarray]],
    metadata_for: Any,
    *,
    before_final: Any = None,
    overwrite: bool = True,
    algorithm: str = DEFAULT_ALGORITHM,
) -> dict[str, str]:
    """Write one safetensors file tensor by tensor, hashing as it goes; return the digests.

    The header is laid out with placeholder digests (a tagged digest has a fixed length, so the
    real header has exactly the same length), the tensors are written and hashed in one pass, and
    the real header is written over the placeholder before the atomic rename. ``metadata_for``
    maps ``{tensor: "<algorithm>:<hex>"}`` to the header metadata; ``before_final()``, if given,
    runs after the tensors are written and before the final metadata is built (``save`` waits
    there for a source digest computed alongside the copy).
    """
    blank = placeholder(algorithm)
    placeholder_header, ordered = build_header(items, metadata_for({k: blank for k, _ in items}))
    with atomic_write(path, overwrite=overwrite) as handle:
        handle.write(placeholder_header)
        handle.flush()  # the header reaches the file now (one syscall), as the fault tests expect
        reach("header-written")
        digests = write_hashed(handle, ordered, algorithm)
        if before_final is not None:
            before_final()
        final, _ = build_header(ordered, metadata_for(digests))
        if len(final) != len(placeholder_header):  # pragma: no cover - the digests have fixed length
            raise WriteError("internal error: header length changed while writing", file=path)
        handle.seek(0)
        handle.write(final)
    return digests


def save_single(
    archive: Archive,
    path: Path,
    *,
    source_digest: Any = None,
    overwrite: bool = True,
    algorithm: str = DEFAULT_ALGORITHM,
) -> Path:
    """Write ``archive`` as one file (see ``weightio.format.store.save``); the spec gets digests."""
    spec = archive.spec
    if source_digest is not None and spec.provenance is None:
        source_digest = None
    if source_digest is not None:  # same length as the real digest: the layout does not change
        spec = with_source_digest(spec, placeholder(source_digest.algorithm))
    order = [ref.key for _, _, ref in spec.stored_refs()]
    items = [(key, archive.stored[key]) for key in order]

    def resolve_source() -> None:
        nonlocal spec
        if source_digest is not None and spec.provenance is not None:
            spec = with_source_digest(spec, source_digest.result())

    digests = write_streamed(
        path, items, lambda d: archive_metadata(spec_with_digests(spec, d)),
        before_final=resolve_source, overwrite=overwrite, algorithm=algorithm,
    )
    archive.spec = spec_with_digests(spec, digests)
    return path


def with_source_digest(spec: ModelSpec, digest: str) -> ModelSpec:
    """``spec`` with the source file's tagged digest recorded in its provenance."""
    provenance = spec.provenance.model_copy(update={"source_digest": digest, "source_sha256": None})
    return spec.model_copy(update={"provenance": provenance})



def load_single(path: Path, *, verify: bool = False) -> Archive:
    """Open one archive file: the header is read now, tensors are mapped and read on use."""
    archive = _load_single(path, verify=verify, plain_is_none=False)
    assert archive is not None
    return archive


def _load_single(path: Path, *, verify: bool, plain_is_none: bool) -> Archive | None:
    """``load_single``; with ``plain_is_none``, ``None`` for a header with no weightio spec."""
    with open_regular(path) as handle:  # mapped from this very handle: a rewrite cannot mix in
        header = read_header(handle, path)
        if plain_is_none and META_SPEC not in header.metadata:
            return None
        mapped = MappedTensors(path, header, handle)
    spec = spec_of_header(header, path)
    tensors = TensorMap(list(header.entries), mapped.get)
    check_header_against_spec(spec, header.entries, path)
    archive = Archive(spec, tensors, path=path, checked=True)  # no array is made until used
    if verify:
        archive.verify()
    return archive


def open_archive_file(path: Path | str) -> Archive | None:
    """``load_single(path)`` for a ``.safetensors`` file holding a weightio spec, else ``None``.

    The header-only start of ``weightio inspect``: it needs neither numpy nor the table of
    frameworks (``weightio.read`` imports every reader to look the file up), so the caller falls
    back to ``weightio.read`` whenever this returns ``None`` (a plain state dict, a sharded set,
    another suffix) and gets the very archive ``read`` would give otherwise.
    """
    from weightio.format import remote

    if remote.is_remote(path):
        if not str(path).endswith(".safetensors"):
            return None
        return remote.open_archive(str(path), required=False)  # header only, by ranged requests
    path = Path(remote.as_local(path))
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    return _load_single(path, verify=False, plain_is_none=True)  # one read of the header


