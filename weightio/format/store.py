"""Saving and loading archives: one file or a sharded set, chosen by size and by what is on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from weightio.errors import TargetExistsError
from weightio.format import remote
from weightio.format.archive import Archive
from weightio.format.hashing import check_algorithm
from weightio.format.sharding import (
    INDEX_SUFFIX,
    index_path,
    is_sharded,
    load_sharded,
    retire_sharded_set,
    save_sharded,
)
from weightio.format.single import load_single, save_single, with_source_digest


def save_remote(
    archive: Archive,
    url: str,
    *,
    max_shard_size: int | str | None = None,
    source_digest: Any = None,
    overwrite: bool = True,
    digest: str | None = None,
) -> str:
    """``save`` to a URL of object storage: written whole in a private local folder (the same
    atomic writer), then uploaded, shards first and the index last; returns the URL written.
    """
    import shutil

    if not overwrite and remote.exists(url):
        raise TargetExistsError("already exists and overwrite=False; remove it or allow "
                                "overwriting", file=url)
    folder = remote.private_folder("upload")
    try:
        local = folder / (remote.basename(url) or "archive.safetensors")
        written = save(archive, local, max_shard_size=max_shard_size, source_digest=source_digest,
                       digest=digest)
        parent = url.rsplit("/", 1)[0]
        others = sorted(p for p in folder.iterdir() if p != written)
        for item in [*others, written]:  # the index (or the single file) last
            remote.upload(item, f"{parent}/{item.name}")
        return f"{parent}/{written.name}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save(
    archive: Archive,
    path: os.PathLike[str] | str,
    *,
    max_shard_size: int | str | None = None,
    source_digest: Any = None,
    overwrite: bool = True,
    digest: str | None = None,
    source_sha256: Any = None,
) -> Path | str:
    """Write ``archive`` to ``path`` atomically, recording each tensor's digest in the spec.

    ``path`` may be an fsspec URL (``s3://bucket/m.safetensors``): the archive is written whole
    locally, then uploaded (``weightio.format.remote``); the URL is returned.

    Tensors are written one at a time and hashed as they are written, so memory stays near the
    largest tensor however large the model.

    Args:
        archive: The archive to write.
        path: Target ``.safetensors`` file.
        max_shard_size: Split into ``name-0000K-of-0000N.safetensors`` shards of at most this
            size (bytes, or a string like ``"2GB"``/``"500MiB"``) plus
            ``name.safetensors.index.json`` holding the spec; a model that fits in one shard is
            written as a single file, as transformers does.
        source_digest: A ``weightio.format.digests.PendingDigest`` of the source file, still
            being computed (``convert`` starts it when it opens the source); it is awaited after
            the tensors are written and recorded as ``provenance.source_digest``.
        overwrite: ``False`` refuses to replace an existing file with ``TargetExistsError``,
            checked before anything is written and again, atomically, when the file is
            published (``os.link``): of several writers racing for one new name, one wins.
        digest: ``"blake3"`` (default: fast, on every core) or ``"sha256"`` (where a policy
            needs it); recorded as ``"<algorithm>:<hex>"`` per tensor, checked by ``verify``.
        source_sha256: The former name of ``source_digest``.

    Returns:
        The path written (the index file when sharded).
    """
    algorithm = check_algorithm(digest)
    if remote.is_remote(path):
        return save_remote(archive, str(path), max_shard_size=max_shard_size,
                           source_digest=source_digest or source_sha256, overwrite=overwrite,
                           digest=algorithm)
    path = Path(remote.as_local(path))
    spec = archive.spec
    if source_digest is None:
        source_digest = source_sha256
    if source_digest is not None and spec.provenance is None:
        source_digest = None
    if not overwrite:
        refuse_existing(path)
    if max_shard_size is not None:
        if source_digest is not None:  # the index is written after the shards anyway
            archive.spec = with_source_digest(spec, source_digest.result())
        return save_sharded(archive, path, max_shard_size, algorithm=algorithm)
    save_single(archive, path, source_digest=source_digest, overwrite=overwrite, algorithm=algorithm)
    retire_sharded_set(path)
    return path


def refuse_existing(path: Path, *, sharded_too: bool = True) -> None:
    """For ``overwrite=False``: ``TargetExistsError`` if ``path`` exists or, with
    ``sharded_too``, a sharded set named after it (writing ``path`` would replace that set).
    """
    for existing in (path, index_path(path)) if sharded_too else (path,):
        if os.path.lexists(existing):
            raise TargetExistsError(
                f"already exists and overwrite=False (--no-overwrite; a sharded set is named by "
                f"its '{INDEX_SUFFIX}'); remove it, pick another name or allow overwriting",
                file=existing)


def load(path: os.PathLike[str] | str, *, verify: bool = False) -> Archive:
    """Open a weightio archive: the header is read now, tensors are mapped and read on use.

    Args:
        path: A ``.safetensors`` file written by weightio, or its URL (``s3://…``: the header is
            read with ranged requests, each tensor fetched when used).
        verify: Also check every tensor's recorded digest now (reads all the bytes).

    Raises:
        SourceNotFoundError: no such file.
        MalformedFileError: not a safetensors file, or not a weightio archive.
        SpecValidationError: the spec is invalid or disagrees with the header.
        IntegrityError: with ``verify=True``, a tensor's bytes changed.
    """
    if remote.is_remote(path):
        return remote.open_archive(str(path), verify=verify)
    path = Path(remote.as_local(path))
    if is_sharded(path):
        return load_sharded(path, verify=verify)
    return load_single(path, verify=verify)
