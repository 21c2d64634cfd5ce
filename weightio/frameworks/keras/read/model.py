"""A serialized Keras model (config + per-layer arrays) -> an ``Archive``, without importing Keras."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from weightio.errors import MalformedFileError, UnsupportedSourceError
from weightio.format.archive import Archive
from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import (
    short,
)
from weightio.frameworks.keras.files.config_checks import foreign_layer, foreign_object
from weightio.frameworks.keras.read.base import KerasLayerEntry, opaque_layer, read_layer
from weightio.frameworks.keras.read.graph import (
    endpoint_names,
    functional_inputs,
    input_spec,
    sequential_build_input,
)
from weightio.frameworks.keras.read.layout import channels_input, keras_tags, layout_refusal
from weightio.spec import spec_from_data
from weightio.spec.base import LayerBase
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance


# -- graph ------------------------------------------------------------------------------------
def archive_from_keras_config(
    model_config: Mapping[str, Any],
    layer_weights: Mapping[str, list[np.ndarray]],
    *,
    provenance: Provenance,
) -> Archive:
    """Turn a serialized Keras model and its per-layer arrays into an ``Archive``.

    Args:
        model_config: ``{"class_name": "Sequential"|"Functional", "config": {...}, ...}``.
        layer_weights: each layer's arrays in ``layer.weights`` order, by layer name.
        provenance: where it came from; the Dense transpose is added to its transforms here.

    Raises:
        UnsupportedSourceError: not a Sequential/Functional config, or a Sequential never built.
        UnsupportedLayerError: shared layers, quantized layers, multi-output layer wiring.
        MalformedFileError: a config that does not follow Keras's format.
    """
    model_config = dict(model_config)
    class_name = model_config.get("class_name")
    if class_name not in ("Sequential", "Functional", "Model"):
        raise UnsupportedSourceError(
            f"a Keras {class_name!r} is not a Sequential or Functional model; subclassed models "
            "have no graph to read. Rebuild it with the Functional API"
        )
    foreign = foreign_object(model_config)
    if foreign is not None:
        raise UnsupportedSourceError(
            f"the model is {foreign}; weightio reads Keras' own Sequential and Functional models"
        )
    config = model_config.get("config") or {}
    layer_configs = config.get("layers")
    if not isinstance(layer_configs, list):
        raise MalformedFileError("the model config has no list of layers")
    sequential = class_name == "Sequential"
    tags, tag_sources = keras_tags(layer_configs, sequential=sequential)

    inputs: list[InputSpec] = []
    layers: list[LayerBase] = []
    transforms: list[str] = []
    tensors = TensorCollector()
    for raw in layer_configs:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            raise MalformedFileError(f"a layer entry is not a serialized layer: {short(raw)}")
        layer_class = str(raw.get("class_name"))
        if layer_class == "InputLayer":
            inp = input_spec(raw)
            inputs.append(channels_input(inp) if tags.get(inp.name) == "channels" else inp)
            continue
        name = str(raw["config"].get("name") or raw.get("name") or "")
        entry = KerasLayerEntry(
            name=name,
            class_name=layer_class,
            module=raw.get("module") if isinstance(raw.get("module"), str) else None,
            config=raw["config"],
            weights=[np.asarray(w) for w in layer_weights.get(name, [])],
            inputs=None if sequential else functional_inputs(raw, name),
            raw=raw,
            input_tags=[tags.get(src, "plain") for src in tag_sources.get(name, [])],
            output_tag=tags.get(name, "plain"),
        )
        foreign = foreign_layer(raw)
        refusal = (f"it names {foreign}; weightio maps only Keras' own classes" if foreign
                   else layout_refusal(entry))
        layers.append(
            read_layer(entry, tensors) if refusal is None else opaque_layer(entry, tensors, refusal)
        )
        transforms.extend(entry.transforms)

    if sequential and not inputs:
        built = sequential_build_input(model_config)
        if built is None:
            raise UnsupportedSourceError(
                "this Sequential model was never built, so its input shape is unknown; start it "
                "with keras.Input(shape=...) or call model.build((None, ...)) first"
            )
        if tags.get("input_layer") == "channels":
            built = channels_input(built)
        inputs.append(built)

    if sequential:
        outputs = [OutputSpec(name=layers[-1].name, layer=layers[-1].name)] if layers else []
    else:
        order = endpoint_names(config.get("input_layers", []))
        by_name = {inp.name: inp for inp in inputs}
        inputs = [by_name[n] for n in order if n in by_name] + [
            i for i in inputs if i.name not in order
        ]
        outputs = [
            OutputSpec(name=n, layer=n) for n in endpoint_names(config.get("output_layers", []))
        ]

    prov = provenance.model_copy(
        update={"transforms": sorted(set(provenance.transforms) | set(transforms))}
    )
    spec_data = {
        "name": str(config.get("name") or "keras_model"),
        "provenance": prov.model_dump(),
        "inputs": [i.model_dump() for i in inputs],
        "layers": [layer.model_dump() for layer in layers],
        "outputs": [o.model_dump() for o in outputs],
    }
    spec: ModelSpec = spec_from_data(spec_data)
    return Archive(spec, tensors.arrays)
