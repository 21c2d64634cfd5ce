"""The file back end: a ``.keras`` written without Keras (``metadata.json``, ``config.json``,
``model.weights.h5``).

The model comes from the same assembly the live back end deserializes
(``frameworks.keras.write.assemble``), so both cover the same layer kinds with the same rules.
``model.weights.h5`` follows Keras 3's layout (the mirror of ``files.reader``): each layer of
``model.layers`` is a group ``layers/<snake_case class>[_<n>]``, numbered in that order per
class, whose ``vars`` group (marked with the layer's ``name``) holds ``0, 1…``; a layer that
tracks sublayers nests their groups under the attribute names Keras walks (``cell`` of an RNN,
``forward_layer``/``backward_layer`` of ``Bidirectional``, ``query_dense``… of
``MultiHeadAttention``), as each mapping's ``VariableGroup`` says. bfloat16 is stored as a
2-byte opaque type marked ``dtype="bfloat16"``, as Keras stores it. Arrays are written one by
one with h5py, and the zip goes through the atomic writer: a failure leaves no partial file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from weightio.errors import WriteError
from weightio.format.archive import Archive
from weightio.format.atomic import TEMP_MARKER, atomic_write
from weightio.frameworks.keras.files.reader import snake_case
from weightio.frameworks.keras.write.assemble import KerasModelPlan, plan_keras_model
from weightio.frameworks.keras.write.base import KerasSettings, VariableGroup
from weightio.frameworks.keras.write.serialized import KERAS_FORMAT_VERSION


def keras_model_plan(archive: Archive) -> KerasModelPlan:
    """The Keras model a ``.keras`` file of ``archive`` holds, for Keras's default settings.

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture.
        UnsupportedLayerError: naming the first layer with no exact Keras equivalent.
    """
    return plan_keras_model(archive, KerasSettings())


def keras_model_config(archive: Archive) -> dict[str, Any]:
    """The ``config.json`` of the Keras model computing ``archive``."""
    return keras_model_plan(archive).config


def _write_group(group: Any, variables: VariableGroup, weights: list[np.ndarray]) -> None:
    """One saveable: its ``vars`` (named, arrays in order), then its nested saveables."""
    from weightio.format.streaming import release
    from weightio.spec.dtypes import as_little_endian

    own = group.create_group("vars")
    own.attrs["name"] = variables.name
    for i, index in enumerate(variables.arrays):
        array = weights[index]
        data = as_little_endian(np.ascontiguousarray(array))
        if data.dtype == np.dtype(ml_dtypes.bfloat16):
            ds = own.create_dataset(str(i), data=data.view(np.uint16).view("V2"))
            ds.attrs["dtype"] = "bfloat16"
        else:
            own.create_dataset(str(i), data=data)
        release(array)
    for attribute, child in variables.children:
        _write_group(group.create_group(attribute), child, weights)


def _write_weights(h5_path: Path, plan: KerasModelPlan) -> None:
    import h5py

    with h5py.File(h5_path, "w") as h5:
        h5.create_group("vars").attrs["name"] = plan.name
        layers = h5.create_group("layers")
        used: dict[str, int] = {}
        for layer in plan.saved_layers():
            base = snake_case(layer.class_name)
            used[base] = used.get(base, -1) + 1
            key = base if used[base] == 0 else f"{base}_{used[base]}"
            _write_group(layers.create_group(key), layer.variables(), layer.weights)


def write_keras_file(archive: Archive, path: os.PathLike[str] | str) -> Path:
    """Write ``archive`` as a ``.keras`` file that ``keras.saving.load_model`` opens; no Keras needed.

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture.
        UnsupportedLayerError: naming the first layer with no exact Keras equivalent.
        WriteError: the target is not a ``.keras`` path, or writing failed (nothing is left).
    """
    path = Path(path)
    if path.suffix.lower() != ".keras":
        raise WriteError(
            "Keras models are saved as .keras files; name the target '<name>.keras'", file=path
        )
    plan = keras_model_plan(archive)
    metadata = {
        "keras_version": KERAS_FORMAT_VERSION,
        "date_saved": _dt.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "written_by": "weightio",
    }
    with atomic_write(path) as handle:
        scratch = path.parent / f".{path.name}{TEMP_MARKER}{secrets.token_hex(6)}.h5"
        try:
            _write_weights(scratch, plan)
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr("metadata.json", json.dumps(metadata))
                zf.writestr("config.json", json.dumps(plan.config))
                with (
                    open(scratch, "rb") as src,
                    zf.open("model.weights.h5", "w", force_zip64=True) as dst,
                ):
                    shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
        finally:
            scratch.unlink(missing_ok=True)
    return path
