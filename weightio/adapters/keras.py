"""``keras.Model`` <-> ``Archive``: reading live models and files, running, loading weights.

Keras is imported lazily inside each function (``require``), so ``import weightio`` stays free of
TensorFlow. The Keras-free part (config + arrays -> archive) lives in ``keras_mapping``; building
Keras models from an archive lives in ``keras_write``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from weightio.adapters import keras_write_conv  # noqa: F401  (registers the spatial writers)
from weightio.adapters.common import provenance, require
from weightio.adapters.keras_mapping import archive_from_keras_config
from weightio.adapters.keras_write import KERAS_WRITE, to_keras
from weightio.adapters.keras_write_seq import keras_weights
from weightio.archive import Archive
from weightio.atomic import atomic_path
from weightio.errors import (
    MalformedFileError,
    SourceNotFoundError,
    StructureMismatchError,
    UnsafeFormatError,
    UnsupportedSourceError,
    WeightioError,
    WeightsOnlyArchiveError,
    WriteError,
)
from weightio.layout_flow import unfolded_flattens
from weightio.layouts import dense_weight_to_keras
from weightio.spec import LayerBase

__all__ = [
    "KERAS_WRITE",
    "load_into_keras",
    "read_keras_file",
    "read_keras_model",
    "run_keras",
    "save_keras",
    "to_keras",
]

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _keras(purpose: str) -> Any:
    return require("keras", purpose=purpose)


def _to_numpy(value: Any) -> np.ndarray:
    """A Keras variable or tensor as a numpy array in its own dtype (bfloat16 stays bfloat16)."""
    keras = _keras("reading Keras tensors")
    return np.asarray(keras.ops.convert_to_numpy(value))


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
    weights = {layer.name: [_to_numpy(w) for w in layer.weights] for layer in model.layers}
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


def read_keras_file(path: str | os.PathLike[str]) -> tuple[Archive, Any]:
    """Load a ``.keras`` (or legacy ``.h5``) model file and read it; return both.

    Loading uses ``safe_mode=True`` so Keras never deserializes code (Lambda layers, custom
    functions) from the file.

    Raises:
        SourceNotFoundError: no such file.
        UnsupportedSourceError: a ``.weights.h5`` file (weights without architecture) or an
            unknown suffix.
        UnsafeFormatError: the file holds code that Keras would only load with safe_mode off.
        MalformedFileError: Keras could not load the file.
    """
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
    keras = _keras("reading a Keras model file")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except WeightioError:
        raise
    except Exception as exc:  # Keras raises many types for bad files; all mean "cannot load"
        if _is_safe_mode_refusal(exc):
            raise UnsafeFormatError(
                "the file contains code (e.g. a Lambda layer or a custom function) that Keras "
                "will only load with safe_mode=False; weightio never executes code from a file. "
                "Replace the Lambda with a built-in or registered layer and save again",
                file=path,
            ) from None
        detail = " ".join(str(exc).split())[:300]
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


def _params(layer: LayerBase) -> dict[str, tuple[tuple[int, ...], str]]:
    return {p: (tuple(ref.shape), ref.dtype) for p, ref in layer.tensor_refs().items()}


def _pair_problems(source: list[LayerBase], target: list[LayerBase]) -> list[str]:
    """Every way the parameterised layers fail to line up, so the user sees them all at once."""
    problems = []
    if len(source) != len(target):
        problems.append(
            f"the archive has {len(source)} layers with weights, the Keras model has {len(target)}"
        )
    for ours, theirs in zip(source, target):
        where = f"archive layer {ours.name!r} -> Keras layer {theirs.name!r}"
        if ours.kind != theirs.kind:
            problems.append(f"{where}: kind {ours.kind} vs {theirs.kind}")
            continue
        a, b = _params(ours), _params(theirs)
        if list(a) != list(b):
            problems.append(f"{where}: parameters {list(a)} vs {list(b)}")
            continue
        for param in a:
            if a[param] != b[param]:
                (sa, da), (sb, db) = a[param], b[param]
                problems.append(f"{where}: {param} {da}{list(sa)} vs {db}{list(sb)}")
    return problems


def _keras_weights(
    archive: Archive, layer: LayerBase, target: LayerBase | None = None
) -> list[np.ndarray]:
    """The arrays a Keras layer's ``set_weights`` takes, from an archive layer of the same kind."""
    refs = layer.tensor_refs()
    arrays = {param: np.asarray(archive.tensors[ref.key]) for param, ref in refs.items()}
    spatial = keras_write_conv.keras_weights(layer, arrays, target)
    if spatial is not None:
        return spatial
    family = keras_weights(archive, layer)
    if family is not None:
        return family
    if layer.kind == "dense":
        return [dense_weight_to_keras(arrays["weight"])] + (
            [arrays["bias"]] if "bias" in arrays else []
        )
    return list(arrays.values())  # opaque: var_0, var_1… in Keras weight order


def load_into_keras(archive: Archive, model: Any) -> None:
    """Copy ``archive``'s weights into an existing Keras model of the same structure.

    Layers with parameters are paired in order; kinds, parameter names, shapes and dtypes must
    agree (nothing is cast). Activations are not compared: an archive from PyTorch holds
    ``Linear`` + ``ReLU`` where Keras has ``Dense(activation="relu")``, and both compute the same.

    Raises:
        WeightsOnlyArchiveError: the archive has no structure to pair layers by.
        StructureMismatchError: naming every mismatched layer at once; the model is untouched.
    """
    if archive.spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (a bare state dict), with no layer structure to "
            "pair with the Keras model's layers; read the source model itself instead",
            file=archive.path,
        )
    archive = keras_write_conv.prepare(archive)  # a flatten's order folded into its Dense
    stuck = unfolded_flattens(
        archive, lambda layer, tag: "channels_last" if tag == "channels" else "channels_first"
    )
    if stuck:
        raise StructureMismatchError(
            f"flatten {stuck[0]!r} flattens in PyTorch's channels-first order and its dense "
            "weights could not be reordered for Keras's Flatten (no Dense right after it, or a "
            "free input size); use to_keras(archive) instead, which keeps the order exactly",
            file=archive.path, layer=stuck[0],
        )
    target = read_keras_model(model)
    ours = [layer for layer in archive.spec.layers if layer.tensor_refs()]
    theirs = [layer for layer in target.spec.layers if layer.tensor_refs()]
    problems = _pair_problems(ours, theirs)
    if problems:
        raise StructureMismatchError(
            "the archive and the Keras model differ: " + "; ".join(problems),
            file=archive.path,
            layer=next((a.name for a, b in zip(ours, theirs) if _pair_problems([a], [b])), None),
        )
    for ours_layer, theirs_layer in zip(ours, theirs):
        model.get_layer(theirs_layer.name).set_weights(
            _keras_weights(archive, ours_layer, theirs_layer)
        )


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
