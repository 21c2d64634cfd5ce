"""``weightio.read``: turn anything a user points at into an ``Archive``.

The source's kind is decided from its Python type (by class *module name*, so no framework is
imported to ask) or from its file extension. Each kind goes to one adapter. Alongside the
archive, ``open_source`` keeps a way to run the source itself, so conversions can be verified
against the original and not just against our own reading of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightio.archive import Archive, load
from weightio.errors import SourceNotFoundError, UnsupportedSourceError, WeightioError
from weightio.safetensors_io import MappedTensors, read_header

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SKLEARN_SUFFIXES = (".skops",)


@dataclass
class Source:
    """A read source: its archive, and a runner for the original model when there is one."""

    archive: Archive
    framework: str
    runner: Runner | None = None
    native: Any = None


def _framework_of(obj: object) -> str | None:
    """Which framework a live object belongs to, judged by its classes' modules (no imports)."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        if module.startswith("torch.nn"):
            return "torch"
        if module.startswith(("keras.", "tf_keras.")) or module == "keras":
            return "keras"
        if module.startswith("sklearn."):
            return "sklearn"
    return None


def open_source(source: Any, **options: Any) -> Source:
    """Read ``source`` and keep a runner for it; see ``read`` for what is accepted."""
    if isinstance(source, Archive):
        return Source(source, "weightio")
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(source), **options)
    framework = _framework_of(source)
    if framework == "torch":
        from weightio.adapters import torch as torch_adapter

        archive = torch_adapter.read_torch_module(source, **options)
        return Source(archive, "torch", lambda xs: torch_adapter.run_torch(source, xs), source)
    if framework == "keras":
        from weightio.adapters import keras as keras_adapter

        _no_options(options, "a Keras model")
        archive = keras_adapter.read_keras_model(source)
        return Source(archive, "keras", lambda xs: keras_adapter.run_keras(source, xs), source)
    if framework == "sklearn":
        return _sklearn_source(source, **options)
    if isinstance(source, Mapping):
        return Source(_read_state_dict(source, **options), "torch")
    raise UnsupportedSourceError(
        f"cannot read a {type(source).__module__}.{type(source).__qualname__}; weightio reads "
        "keras.Model, torch.nn.Module, state dicts, weightio archives and files "
        f"({', '.join(KERAS_SUFFIXES + TORCH_SUFFIXES)}, .safetensors)"
    )


def _no_options(options: dict[str, Any], what: str) -> None:
    if options:
        raise UnsupportedSourceError(
            f"options {', '.join(sorted(options))} do not apply to {what}"
        )


def _read_state_dict(state_dict: Mapping[str, Any], **options: Any) -> Archive:
    """Numpy arrays stay framework-free; anything else (torch tensors) goes to the torch adapter."""
    if state_dict and all(isinstance(v, np.ndarray) for v in state_dict.values()):
        from weightio.adapters.common import provenance
        from weightio.weights_only import archive_from_state_dict

        _no_options({k: v for k, v in options.items() if k != "name"}, "a dict of arrays")
        return archive_from_state_dict(
            state_dict,
            name=options.get("name", "state_dict"),
            provenance=provenance("unknown", framework_version=None, source_class="dict"),
        )
    from weightio.adapters import torch as torch_adapter

    return torch_adapter.read_state_dict(state_dict, **options)


def _keras_installed() -> bool:
    """Whether Keras could be imported, asked without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("keras") is not None
    except (ImportError, ValueError):
        return False


def _lazy_keras_runner(path: Path) -> Runner | None:
    """Run the file's model with Keras, loaded on first use and only if Keras is installed.

    Reading never needs Keras; this runner exists so ``convert`` can check the result against
    Keras's own reading of the file when Keras happens to be there.
    """
    if not _keras_installed():
        return None
    model: list[Any] = []

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        from weightio.adapters import keras as keras_adapter

        if not model:
            model.append(keras_adapter.read_keras_file(path)[1])
        return keras_adapter.run_keras(model[0], xs)

    return run


def _open_path(path: Path, **options: Any) -> Source:
    """Open a file or folder; every refusal names it, wherever in a reader it was raised."""
    try:
        return _open_named_path(path, **options)
    except WeightioError as exc:
        raise exc.with_file(path) from None


def _open_named_path(path: Path, **options: Any) -> Source:
    if not path.exists():
        raise SourceNotFoundError("no such file or folder", file=path)
    from weightio.sharding import INDEX_SUFFIX, is_sharded, read_sharded

    if is_sharded(path):
        return Source(read_sharded(path, **options), "weightio")
    if path.is_dir():
        raise UnsupportedSourceError(
            "is a folder; name a model file (.keras, .h5, .pt, .safetensors …) or a folder "
            f"holding one '*{INDEX_SUFFIX}' sharded set",
            file=path,
        )
    name = path.name.lower()
    suffix = path.suffix.lower()
    if name.endswith(".weights.h5") or suffix in KERAS_SUFFIXES:
        from weightio.adapters.keras_files import read_keras_path

        architecture = options.pop("architecture", None)
        _no_options(options, "a Keras file")
        archive = read_keras_path(path, architecture=architecture)
        runner = None if name.endswith(".weights.h5") else _lazy_keras_runner(path)
        return Source(archive, "keras", runner)
    if suffix in TORCH_SUFFIXES:
        from weightio.adapters.torch_pickle import read_checkpoint

        return Source(read_checkpoint(path, **options), "torch")
    if suffix == ".safetensors":
        return Source(_read_safetensors(path, **options), "weightio")
    if suffix in PICKLE_SUFFIXES or suffix == ".skops":
        return _sklearn_file(path, suffix, **options)
    raise UnsupportedSourceError(
        f"unknown file type {suffix or '(no extension)'!r}; weightio reads "
        f"{', '.join(KERAS_SUFFIXES + TORCH_SUFFIXES + SKLEARN_SUFFIXES)}, .safetensors "
        "and (with trust_pickle=True) .pkl/.joblib",
        file=path,
    )


def _sklearn_source(estimator: Any, *, source_file: Path | None = None, **options: Any) -> Source:
    """A fitted estimator or Pipeline; its runner calls the method the archive's output mirrors."""
    from weightio.adapters import sklearn as sklearn_adapter

    unknown = sorted(set(options) - {"head", "dtype", "name"})
    if unknown:
        raise UnsupportedSourceError(
            f"options {', '.join(unknown)} do not apply to a scikit-learn estimator "
            "(it takes head=, dtype=, name=)"
        )
    archive = sklearn_adapter.read_sklearn_estimator(estimator, source_file=source_file, **options)
    role = sklearn_adapter.archive_role(archive)
    return Source(
        archive,
        "sklearn",
        lambda xs: sklearn_adapter.run_sklearn(estimator, xs, role),
        estimator,
    )


def _sklearn_file(path: Path, suffix: str, **options: Any) -> Source:
    """``.skops`` through skops' audit; pickles only with ``trust_pickle=True``."""
    from weightio.adapters import sklearn_files

    trust_pickle = bool(options.pop("trust_pickle", False))
    trusted = options.pop("trusted", None)
    if suffix == ".skops":
        estimator = sklearn_files.load_skops(path, trusted=trusted)
    else:
        estimator = sklearn_files.load_pickle(path, trust_pickle=trust_pickle)
    if _framework_of(estimator) != "sklearn":
        raise UnsupportedSourceError(
            f"the file holds a {type(estimator).__module__}.{type(estimator).__qualname__}, "
            "not a scikit-learn estimator",
            file=path,
        )
    try:
        return _sklearn_source(estimator, source_file=path, **options)
    except WeightioError as exc:  # an unfitted or unreadable step: say which file holds it
        raise exc.with_file(path) from None


def _read_safetensors(path: Path, **options: Any) -> Archive:
    """A weightio archive loads as itself; a plain safetensors state dict reads weights-only."""
    with open(path, "rb") as handle:
        header = read_header(handle, path)
        mapped = MappedTensors(path, header, handle)  # pinned: a rewrite cannot mix in
    if "weightio.spec" in header.metadata:
        _no_options(options, "a weightio archive")
        return load(path)
    from weightio.adapters.common import provenance
    from weightio.weights_only import archive_from_state_dict

    arrays = {name: mapped.get(name) for name in header.entries}
    return archive_from_state_dict(
        arrays,
        name=options.get("name", path.stem),
        provenance=provenance(
            "safetensors", framework_version=None, source_class=None, source_file=path
        ),
    )


def read(source: Any, **options: Any) -> Archive:
    """Read a model or checkpoint into an ``Archive``.

    Args:
        source: A ``keras.Model``; a ``torch.nn.Module``; a fitted scikit-learn estimator or
            Pipeline; a state dict (names to tensors or arrays); a weightio ``Archive``; or a
            path to ``.keras``, ``.h5``, ``.pt``, ``.pth``, ``.bin``, ``.skops``,
            ``.safetensors`` (a weightio archive or a plain state dict), ``.weights.h5`` (with
            ``architecture=``), a sharded set (its ``*.safetensors.index.json`` or the folder
            holding it), or ``.pkl``/``.joblib`` (with ``trust_pickle=True``).
        **options: Passed to the adapter: ``example_input=`` for a module whose input shape
            cannot be inferred, ``key=`` to pick the state dict inside a training checkpoint,
            ``architecture=`` (a ``.keras`` file, ``config.json`` or config dict) for a
            ``.weights.h5`` file; for scikit-learn ``head=`` (``"predict_proba"`` default for
            classifiers that have it, ``"decision_function"``), ``dtype=`` (e.g.
            ``"float32"``), ``trust_pickle=True`` to unpickle a file you trust, ``trusted=[...]``
            extra types for a ``.skops`` file.

    Files are read without any framework: Keras files with h5py, zipfile and json; PyTorch
    checkpoints with a data-only unpickler. Tensors stay memory-mapped until used.

    Returns:
        The archive. Bare state dicts give a weights-only archive (``spec.weights_only``).
    """
    return open_source(source, **options).archive
