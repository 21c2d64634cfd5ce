"""Helpers every adapter shares: lazy framework imports, tensor collection, provenance."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from weightio.archive import Archive, tensor_ref
from weightio.dtypes import as_little_endian
from weightio.errors import MissingFrameworkError
from weightio.spec import ModelSpec, Provenance, TensorRef
from weightio.version import __version__

_EXTRAS = {
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "keras",
    "sklearn": "sklearn",
    "skops": "sklearn",
    "matplotlib": "plot",
}


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise one clear line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module.split(".")[0], "all")
        raise MissingFrameworkError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed ({exc}); "
            f"install it with: pip install 'weightio[{extra}]'"
        ) from None


class TensorCollector:
    """Gathers a reader's arrays under ``<layer>.<param>`` keys and hands back ``TensorRef``s."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, layer: str, param: str, array: np.ndarray) -> TensorRef:
        """Store ``array`` as parameter ``param`` of ``layer`` and return its reference."""
        key = f"{layer}.{param}"
        if key in self.arrays:
            raise ValueError(f"tensor {key!r} collected twice")
        array = as_little_endian(np.asarray(array))
        self.arrays[key] = array
        return tensor_ref(key, array)


def now_utc() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def file_sha256(path: os.PathLike[str] | str) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(
    framework: str,
    *,
    framework_version: str | None,
    source_class: str | None,
    source_file: os.PathLike[str] | str | None = None,
    transforms: list[str] | None = None,
) -> Provenance:
    """Build the provenance record; a file is named by base name and sha256, never full path.

    Inside ``weightio.source_digest.deferring_source_digests()`` (``convert`` to an archive) the
    file's sha256 is computed on a worker thread while the tensors are copied, and ``save`` fills
    it in before the header is final; everywhere else it is computed here.
    """
    from weightio import source_digest

    digest = None
    if source_file is not None:
        if source_digest.deferring():
            source_digest.start(source_file)
        else:
            digest = file_sha256(source_file)
    return Provenance(
        source_framework=framework,  # type: ignore[arg-type]
        source_framework_version=framework_version,
        source_class=source_class,
        source_file=None if source_file is None else Path(source_file).name,
        source_sha256=digest,
        weightio_version=__version__,
        created_at=now_utc(),
        transforms=sorted(set(transforms or [])),
    )


def make_archive(spec_data: dict[str, Any], arrays: dict[str, np.ndarray]) -> Archive:
    """Validate ``spec_data`` and pair it with ``arrays``."""
    from weightio.spec import spec_from_data

    spec: ModelSpec = spec_from_data(spec_data)
    return Archive(spec, arrays)
