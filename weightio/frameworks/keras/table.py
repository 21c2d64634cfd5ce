"""Keras's rows in the table of sources and targets: models, model files, the ``.keras`` target.

Reading a Keras file never needs Keras (h5py, zipfile and json only). When Keras happens to be
installed, the opened source also carries a runner that loads the file through Keras on first
use, or in a witness process that ``convert`` starts as it begins (``witness.py``), so ``convert``
can check its result against Keras's own reading of the file. Keras sees the
file only after weightio has checked it (``model.read_keras_file``: the TF-free reader's checks,
then the allowlist of Keras' own classes, on the file and on a private copy Keras then loads with
``safe_mode=True``); a config naming anything else is refused before Keras is imported.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

from weightio.format.archive import Archive
from weightio.frameworks.table import (
    FileSource,
    ObjectSource,
    Runner,
    Source,
    Target,
    from_modules,
    no_options,
)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def keras_installed() -> bool:
    """Whether Keras could be imported, asked without importing it."""
    try:
        return importlib.util.find_spec("keras") is not None
    except (ImportError, ValueError):
        return False


def _open_model(model: Any, **options: Any) -> Source:
    from weightio.frameworks.keras.model import read_keras_model, run_keras

    no_options(options, "a Keras model")
    archive = read_keras_model(model)
    return Source(archive, "keras", lambda xs: run_keras(model, xs), model)


def _file_runner(
    model_file: Path, weights: Path | None = None, config: dict[str, Any] | None = None
) -> Runner | None:
    """Run a Keras file's model (``witness.KerasFileRunner``: in a witness process once
    ``convert`` starts it, else in this process on first use), only if Keras is installed.
    """
    if not keras_installed():
        return None
    from weightio.frameworks.keras.witness import KerasFileRunner

    return KerasFileRunner(model_file, weights, config)


def _weights_runner(path: Path, architecture: Any) -> Runner | None:
    """Run a ``.weights.h5`` file's model: its ``.keras`` architecture loaded through the same
    checks as any Keras file, then these weights (already checked without Keras) loaded into it.
    """
    if not isinstance(architecture, (str, os.PathLike)):
        return None
    model_file = Path(architecture)
    if model_file.suffix.lower() != ".keras":
        return None
    return _file_runner(model_file, path)


def _open_file(path: Path, **options: Any) -> Source:
    from weightio.frameworks.keras.files.reader import read_keras_path, read_model_file_checked

    architecture = options.pop("architecture", None)
    no_options(options, "a Keras file", allowed=("architecture",))
    config = None
    if architecture is None and not path.name.lower().endswith(".weights.h5"):
        archive, config = read_model_file_checked(path)  # read_keras_path's reading, and its config
    else:
        archive = read_keras_path(path, architecture=architecture)
    if path.name.lower().endswith(".weights.h5"):
        runner = _weights_runner(path, architecture)
        return Source(archive, "keras", runner, not_run=None if runner else (
            "Keras is not installed" if not keras_installed() else
            "its architecture is not a .keras file, so weightio does not build a Keras model of it"
        ))
    runner = _file_runner(path, config=config)
    return Source(archive, "keras", runner, not_run=None if runner else "Keras is not installed")


def _load_into(archive: Archive, model: Any, *, strict: bool = True, rename: Any = None) -> Any:
    from weightio.errors import UnsupportedSourceError
    from weightio.frameworks.keras.load import load_into_keras

    if rename is not None:
        raise UnsupportedSourceError(
            "rename= pairs tensors by state-dict key, which a Keras model has not; Keras targets "
            "pair layers by order (strict=False skips the ones that do not fit)"
        )
    return load_into_keras(archive, model, strict=strict)


def _build(archive: Archive, *, nested: bool | None = None, **options: Any) -> tuple[Any, Runner | None]:
    """A live Keras model when Keras is installed; else None (written by weightio itself).

    ``nested`` is ``to_keras``'s. The Keras-free file writer writes a nested model's layers
    flat: said in a warning, and refused where nesting was required.
    """
    if not keras_installed():
        groups = sorted({layer.name.split("/")[0] for layer in archive.spec.layers
                         if "/" in layer.name})
        if groups and nested:
            from weightio.frameworks.keras.write.nesting import NestingError

            raise NestingError(
                "nesting was required (nested=True, --nested), but Keras is not installed and "
                "weightio's own .keras writer writes nested models flat; install keras, or "
                "pass --flat", layer=groups[0])
        if groups and nested is None:
            warnings.warn(
                f"Keras is not installed: the nested model(s) {', '.join(groups[:5])} are "
                "written flat ('/' as '_'); install keras to keep them nested", stacklevel=3)
        return None, None
    from weightio.frameworks.keras.model import run_keras
    from weightio.frameworks.keras.write.build import to_keras

    model = to_keras(archive, nested=nested)
    return model, lambda xs: run_keras(model, xs)


def _write(archive: Archive, native: Any, destination: Path, **options: Any) -> Path:
    if native is None:
        from weightio.frameworks.keras.files.writer import write_keras_file

        return write_keras_file(archive, destination)
    from weightio.frameworks.keras.model import save_keras

    return save_keras(native, destination)


#: This package's rows of the table, registered in order by ``weightio.frameworks``.
ROWS = (
    ObjectSource(
        "keras",
        "keras.Model",
        from_modules("keras.", "tf_keras."),
        _open_model,
        load_into=_load_into,
    ),
    FileSource(
        "keras",
        "Keras files",
        _open_file,
        suffixes=(".keras", ".h5", ".hdf5", ".weights.h5"),
        sniff=lambda head: head.startswith(HDF5_MAGIC),
        listed_as=".keras, .h5, .weights.h5 (with architecture=)",
    ),
    Target("keras", "keras", (".keras",), _build, _write, what="Keras"),
)
