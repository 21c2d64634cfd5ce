"""Write a ``.keras`` file without Keras: ``metadata.json``, ``config.json``, ``model.weights.h5``.

The layer choices mirror ``keras_write`` (the same activation rules, name allocation and dtypes),
expressed as the plain config dicts Keras 3 serializes; weights go into ``model.weights.h5`` in
Keras 3's layout (see ``keras_files``), tensor by tensor with h5py. The zip is written through the
atomic writer, so a failure never leaves a partial ``.keras`` behind.
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

from weightio.adapters.keras_files import _snake
from weightio.adapters.keras_write import (
    _KERAS_ANY,
    _KERAS_FLOAT,
    NameAllocator,
    keras_activation_name,
)
from weightio.archive import Archive
from weightio.atomic import TEMP_MARKER, atomic_write
from weightio.errors import UnsupportedLayerError, WeightsOnlyArchiveError, WriteError
from weightio.spec import ActivationFn, LayerBase

#: Keras version whose format these configs follow (written to metadata.json).
KERAS_FORMAT_VERSION = "3.15.1"


def _policy(dtype: str) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": dtype},
        "registered_name": None,
    }


def _layer(
    class_name: str,
    name: str,
    dtype: str,
    config: dict[str, Any],
    input_shape: list[Any] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "module": "keras.layers",
        "class_name": class_name,
        "config": {"name": name, "trainable": True, "dtype": _policy(dtype), **config},
        "registered_name": None,
    }
    if input_shape is not None:
        entry["build_config"] = {"input_shape": input_shape}
    return entry


def _initializer(name: str) -> dict[str, Any]:
    config = {"seed": None} if name == "GlorotUniform" else {}
    return {
        "module": "keras.initializers",
        "class_name": name,
        "config": config,
        "registered_name": None,
    }


def _activation_layer(fn: ActivationFn, name: str, dtype: str, layer: str) -> dict[str, Any]:
    as_string = keras_activation_name(fn)
    if as_string is not None:
        return _layer("Activation", name, dtype, {"activation": as_string})
    if fn.name == "leaky_relu" and fn.negative_slope is not None and fn.negative_slope >= 0:
        return _layer("LeakyReLU", name, dtype, {"negative_slope": fn.negative_slope})
    if fn.name == "elu":
        return _layer("ELU", name, dtype, {"alpha": fn.alpha})
    if fn.name == "softmax":
        return _layer("Softmax", name, dtype, {"axis": fn.axis})
    raise UnsupportedLayerError(
        f"activation {fn.describe()} has no exact Keras equivalent (Keras offers it only with "
        "its default parameters); weightio does not approximate",
        layer=layer,
    )


class _Plan:
    """Layer configs in order, with each one's arrays and output feature shape."""

    def __init__(self, archive: Archive, names: NameAllocator) -> None:
        self.archive, self.names = archive, names

    def layers_for(
        self, layer: LayerBase, shape: list[Any], dtype: str
    ) -> list[tuple[dict[str, Any], list[np.ndarray], list[Any], str]]:
        """``[(config, arrays, output_shape, dtype)]`` computing ``layer``."""
        name = self.names.by_spec[layer.name]
        kind = layer.kind
        if kind == "dense":
            if layer.weight.dtype not in _KERAS_FLOAT:
                raise UnsupportedLayerError(
                    f"dense weights are {layer.weight.dtype}; Keras Dense computes in a float dtype "
                    "only",
                    layer=layer.name,
                )
            dtype = _KERAS_FLOAT[layer.weight.dtype]
            as_string = keras_activation_name(layer.activation)
            out = [*shape[:-1], layer.units]
            config = _layer(
                "Dense",
                name,
                dtype,
                {
                    "units": layer.units,
                    "activation": as_string or "linear",
                    "use_bias": layer.use_bias,
                    "kernel_initializer": _initializer("GlorotUniform"),
                    "bias_initializer": _initializer("Zeros"),
                    "kernel_regularizer": None,
                    "bias_regularizer": None,
                    "activity_regularizer": None,
                    "kernel_constraint": None,
                    "bias_constraint": None,
                    "quantization_config": None,
                },
                input_shape=[None, *shape],
            )
            weight = self.archive.tensors[layer.weight.key]
            arrays = [np.asarray(weight).T]  # Keras kernel [in, out]: a view, copied when written
            if layer.bias is not None:
                arrays.append(self.archive.tensors[layer.bias.key])
            result = [(config, arrays, out, dtype)]
            if as_string is None:
                follow = self.names.fresh(f"{name}_{layer.activation.name}")
                result.append(
                    (_activation_layer(layer.activation, follow, dtype, layer.name), [], out, dtype)
                )
            return result
        if kind == "activation":
            return [
                (_activation_layer(layer.activation, name, dtype, layer.name), [], shape, dtype)
            ]
        if kind == "dropout":
            config = _layer(
                "Dropout", name, dtype, {"rate": layer.rate, "seed": None, "noise_shape": None}
            )
            return [(config, [], shape, dtype)]
        if kind == "identity":
            return [(_layer("Identity", name, dtype, {}), [], shape, dtype)]
        if kind == "opaque":
            why = f" ({layer.reason})" if layer.reason else ""
            raise UnsupportedLayerError(
                f"{layer.source_class or 'this layer'} was kept as 'opaque'{why}; weightio cannot "
                "build it in Keras. Replace or remove that layer in the source model",
                layer=layer.name,
            )
        raise UnsupportedLayerError(f"no Keras mapping for kind {kind!r}", layer=layer.name)


def _tensor(shape: list[Any], dtype: str, source: str) -> dict[str, Any]:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, *shape], "dtype": dtype, "keras_history": [source, 0, 0]},
    }


def keras_model_config(
    archive: Archive,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], list[np.ndarray]]]]:
    """The ``config.json`` of the Keras model computing ``archive``, and each layer's arrays.

    A chain becomes ``Sequential``, anything else ``Functional`` (as ``to_keras`` builds them).
    """
    spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (a bare state dict) and no architecture, so no Keras "
            "model can be written from it; build the model in Keras and use load_into instead",
            file=archive.path,
        )
    names = NameAllocator()
    for inp in spec.inputs:
        names.reserve(inp.name)
    for layer in spec.layers:
        names.reserve(layer.name)
    plan = _Plan(archive, names)
    model_name = NameAllocator.clean(spec.name)
    inputs = []
    shapes: dict[str, list[Any]] = {}
    dtypes: dict[str, str] = {}
    for inp in spec.inputs:
        name = names.by_spec[inp.name]
        inputs.append(
            _layer(
                "InputLayer",
                name,
                "float32",
                {
                    "batch_shape": [None, *inp.shape],
                    "sparse": False,
                    "ragged": False,
                    "optional": False,
                },
            )
        )
        inputs[-1]["config"]["dtype"] = _KERAS_ANY.get(inp.dtype, "float32")
        shapes[inp.name] = list(inp.shape)
        dtypes[inp.name] = _KERAS_FLOAT.get(inp.dtype, "float32")
    entries: list[tuple[dict[str, Any], list[np.ndarray]]] = []
    if spec.is_chain:
        shape, dtype = shapes[spec.inputs[0].name], dtypes[spec.inputs[0].name]
        for layer in spec.layers:
            produced = list(plan.layers_for(layer, shape, dtype))
            entries.extend((config, arrays) for config, arrays, _, _ in produced)
            if produced:  # the next layer reads what the last Keras layer made
                shape, dtype = produced[-1][2], produced[-1][3]
        first = inputs[0]["config"]["batch_shape"]
        config = {
            "name": model_name,
            "trainable": True,
            "dtype": _policy("float32"),
            "layers": [inputs[0], *[c for c, _ in entries]],
            "build_input_shape": first,
        }
        model = {
            "module": "keras",
            "class_name": "Sequential",
            "config": config,
            "registered_name": None,
            "build_config": {"input_shape": first},
        }
        return model, entries
    ends: dict[str, str] = {inp.name: names.by_spec[inp.name] for inp in spec.inputs}
    for inp in inputs:
        inp["name"] = inp["config"]["name"]
        inp["inbound_nodes"] = []
    for index in spec.topological_order():
        layer = spec.layers[index]
        sources = spec.layer_inputs(index)
        if len(sources) != 1:
            raise UnsupportedLayerError(
                f"a {layer.kind} layer takes one input, the spec gives it {len(sources)}: "
                f"{sources}",
                layer=layer.name,
            )
        source = sources[0]
        shape, dtype, upstream = shapes[source], dtypes[source], ends[source]
        for config, arrays, out, out_dtype in plan.layers_for(layer, shape, dtype):
            config["name"] = config["config"]["name"]
            config["inbound_nodes"] = [{"args": [_tensor(shape, dtype, upstream)], "kwargs": {}}]
            entries.append((config, arrays))
            upstream, shape, dtype = config["config"]["name"], out, out_dtype
        ends[layer.name], shapes[layer.name], dtypes[layer.name] = upstream, shape, dtype

    def endpoints(names_: list[str]) -> list[Any]:
        points = [[n, 0, 0] for n in names_]
        return points[0] if len(points) == 1 else points

    config = {
        "name": model_name,
        "trainable": True,
        "layers": [*inputs, *[c for c, _ in entries]],
        "input_layers": endpoints([names.by_spec[i.name] for i in spec.inputs]),
        "output_layers": endpoints([ends[o.layer] for o in spec.outputs]),
    }
    model = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": config,
        "registered_name": "Functional",
    }
    # Functional models also save their InputLayers as weight groups (with no variables).
    return model, [(inp, []) for inp in inputs] + entries


def _write_weights(
    h5_path: Path, model_name: str, entries: list[tuple[dict[str, Any], list[np.ndarray]]]
) -> None:
    import h5py

    from weightio.dtypes import as_little_endian
    from weightio.streaming import release

    with h5py.File(h5_path, "w") as h5:
        h5.create_group("vars").attrs["name"] = model_name
        layers = h5.create_group("layers")
        used: dict[str, int] = {}
        for config, arrays in entries:
            base = _snake(config["class_name"])
            used[base] = used.get(base, -1) + 1
            key = base if used[base] == 0 else f"{base}_{used[base]}"
            variables = layers.create_group(key).create_group("vars")
            variables.attrs["name"] = config["config"]["name"]
            for i, array in enumerate(arrays):
                data = as_little_endian(np.ascontiguousarray(array))
                if data.dtype == np.dtype(ml_dtypes.bfloat16):
                    ds = variables.create_dataset(str(i), data=data.view(np.uint16).view("V2"))
                    ds.attrs["dtype"] = "bfloat16"
                else:
                    variables.create_dataset(str(i), data=data)
                release(array)


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
    model, entries = keras_model_config(archive)
    metadata = {
        "keras_version": KERAS_FORMAT_VERSION,
        "date_saved": _dt.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "written_by": "weightio",
    }
    with atomic_write(path) as handle:
        scratch = path.parent / f".{path.name}{TEMP_MARKER}{secrets.token_hex(6)}.h5"
        try:
            _write_weights(scratch, model["config"]["name"], entries)
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr("metadata.json", json.dumps(metadata))
                zf.writestr("config.json", json.dumps(model))
                with (
                    open(scratch, "rb") as src,
                    zf.open("model.weights.h5", "w", force_zip64=True) as dst,
                ):
                    shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
        finally:
            scratch.unlink(missing_ok=True)
    return path
