"""Live ``keras.Model`` objects: reading them, loading model files through Keras, running, saving."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import (
    MalformedFileError,
    SourceNotFoundError,
    UnsafeFormatError,
    UnsupportedSourceError,
    WeightioError,
    WriteError,
)
from weightio.format.archive import Archive
from weightio.format.atomic import atomic_path
from weightio.format.provenance import provenance
from weightio.frameworks.keras.read.model import archive_from_keras_config
from weightio.optional import require

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _keras(purpose: str) -> Any:
    return require("keras", purpose=purpose)


def _to_numpy(value: Any) -> np.ndarray:
    """A Keras variable or tensor as a numpy array in its own dtype (bfloat16 stays bfloat16)."""
    keras = _keras("reading Keras tensors")
    return np.asarray(keras.ops.convert_to_numpy(value))


def _layer_weights(keras: Any, model: Any, prefix: str = "") -> dict[str, list[np.ndarray]]:
    """Each layer's arrays by name; a nested model's layers as ``<model>/<layer>`` too
    (``read.nested`` inlines them by those names).
    """
    from weightio.frameworks.keras.read.nested import NEST

    weights: dict[str, list[np.ndarray]] = {}
    for layer in model.layers:
        weights[prefix + layer.name] = [_to_numpy(w) for w in layer.weights]
        if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
            weights.update(_layer_weights(keras, layer, f"{prefix}{layer.name}{NEST}"))
    return weights


def read_keras_model(
    model: Any, *, source_file: str | os.PathLike[str] | None = None
) -> Archive:
    """Read a built ``keras.Sequential`` or Functional model into an ``Archive``.

    Args:
        model: The Keras model (weights are read as they are now).
        source_file: The file it was loaded from, recorded (name and sha256) in provenance.
    """
    keras = _keras("reading a Keras model")
    if not isinstance(model, keras.Model):
        raise UnsupportedSourceError(
            f"expected a keras.Model, got {type(model).__name__}; "
            "pass a Sequential or Functional model"
        )
    config = keras.saving.serialize_keras_object(model)
    weights = _layer_weights(keras, model)
    prov = provenance(
        "keras",
        framework_version=keras.__version__,
        source_class=f"keras.{config.get('class_name', type(model).__name__)}",
        source_file=source_file,
    )
    return archive_from_keras_config(config, weights, provenance=prov)


def _is_safe_mode_refusal(exc: BaseException) -> bool:
    text = str(exc)
    return "safe_mode" in text or "unsafe" in text.lower()


@contextlib.contextmanager
def _private_copy(path: Path) -> Iterator[Path]:
    """A copy of ``path`` in a fresh folder only this user can enter, removed afterwards.

    Keras opens a model file by name, itself, after weightio has checked it; a copy nobody else
    can reach makes sure the bytes Keras reads are the bytes that were checked (the user's file
    could be replaced in between).
    """
    import shutil
    import tempfile

    from weightio.format.paths import open_regular

    folder = Path(tempfile.mkdtemp(prefix="weightio-verify-"))  # mode 0700
    try:
        copy = folder / path.name
        with open_regular(path) as source, open(copy, "xb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_keras_file(path: str | os.PathLike[str]) -> tuple[Archive, Any]:
    """Load a ``.keras`` (or legacy ``.h5``) model file through Keras and read it; return both.

    The file reaches Keras only after weightio has checked it without Keras: the file, then a
    private copy of it, are read with the TF-free reader (zip members, HDF5 links, external
    storage, filters and heaps, names, file fields) and the config must name only Keras' own classes
    (``files.config_checks.check_keras_objects``: no module, custom object or registered name
    from elsewhere, no Lambda). Only then is Keras imported, and it loads that copy with
    ``safe_mode=True`` and ``compile=False``. So no module a file names is imported, TensorFlow
    included, for a file that fails the checks.

    Raises:
        SourceNotFoundError: no such file.
        UnsupportedSourceError: a ``.weights.h5`` file (weights without architecture) or an
            unknown suffix.
        UnsafeFormatError: the config names a class outside Keras' own (named), or holds code
            that Keras will only load with safe_mode off.
        MalformedFileError: the file fails weightio's checks, or Keras could not load it.
    """
    from weightio.frameworks.keras.files.config_checks import check_keras_objects
    from weightio.frameworks.keras.files.reader import read_model_file_checked

    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError("no such Keras model file", file=path)
    if path.name.endswith(".weights.h5"):
        raise UnsupportedSourceError(
            "a .weights.h5 file holds weights without the architecture; weightio needs the whole "
            "model. Save it with model.save('model.keras') and read that instead",
            file=path,
        )
    if path.suffix.lower() not in _MODEL_SUFFIXES or not path.is_file():
        raise UnsupportedSourceError(
            f"not a Keras model file; weightio reads {', '.join(_MODEL_SUFFIXES)} files", file=path
        )
    # the file as given first: a refusal needs no copy; then the copy, which is what Keras reads
    check_keras_objects(read_model_file_checked(path)[1], file=path)
    with _private_copy(path) as copy:
        try:
            _, config = read_model_file_checked(copy)
            check_keras_objects(config, file=copy)
        except WeightioError as exc:  # name the user's file, not the private copy
            raise type(exc)(exc.message.replace(str(copy), str(path)), file=path,
                            layer=exc.layer, tensor=exc.tensor) from None
        keras = _keras("reading a Keras model file")
        try:
            model = keras.saving.load_model(copy, compile=False, safe_mode=True)
        except WeightioError:
            raise
        except Exception as exc:  # Keras raises many types for bad files; all mean "cannot load"
            if _is_safe_mode_refusal(exc):
                raise UnsafeFormatError(
                    "the file contains code (e.g. a Lambda layer or a custom function) that Keras "
                    "will only load with safe_mode=False; weightio never executes code from a "
                    "file. Replace the Lambda with a built-in or registered layer and save again",
                    file=path,
                ) from None
            detail = " ".join(str(exc).replace(str(copy), str(path)).split())[:300]
            raise MalformedFileError(
                f"Keras could not load this model file ({type(exc).__name__}: {detail}); "
                "check it is a complete .keras/.h5 model saved by model.save",
                file=path,
            ) from None
    return read_keras_model(model, source_file=path), model


def run_keras(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` in inference mode; return one numpy array per model output."""
    keras = _keras("running a Keras model")
    arrays = [np.asarray(x) for x in inputs]
    result = model(arrays[0] if len(arrays) == 1 else arrays, training=False)
    if isinstance(result, dict):
        result = [result[name] for name in model.output_names]
    if not isinstance(result, (list, tuple)):
        result = [result]
    return [np.asarray(keras.ops.convert_to_numpy(r)) for r in result]


def save_keras(model: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` as a ``.keras`` file atomically (temp file beside it, then rename)."""
    path = Path(path)
    if path.suffix.lower() != ".keras":
        raise WriteError(
            "Keras models are saved as .keras files; name the target '<name>.keras'", file=path
        )
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)
    return path
