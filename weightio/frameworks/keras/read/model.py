"""A serialized Keras model (config + per-layer arrays) -> an ``Archive``, without importing Keras."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from weightio.errors import MalformedFileError, UnsupportedLayerError, UnsupportedSourceError
from weightio.format.archive import Archive
from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import (
    NotExact,
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
from weightio.frameworks.keras.read.layout import (
    LayoutMove,
    channels_input,
    keras_forms,
    layout_refusal,
    move_dims,
    multi_output_layers,
)
from weightio.frameworks.keras.read.nested import inline_nested, model_classes
from weightio.frameworks.keras.read.ops import parameter_chains, parameter_layer, split_layers
from weightio.frameworks.keras.read.shared import share_tensors, split_calls
from weightio.spec import spec_from_data
from weightio.spec.base import LayerBase
from weightio.spec.conv import PermuteLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance

# -- graph ------------------------------------------------------------------------------------


def _insert_move(
    move: LayoutMove,
    inputs: list[str] | None,
    layers: list[LayerBase],
    moved: dict[tuple[str, str], str],
    taken: set[str],
    sequential: bool,
) -> list[str] | None:
    """Append the exact permute of ``move`` (once per tensor and form) and rewire the reader.

    Keras holds the tensor one way for both of its readers; the spec holds a sequence
    ``(batch, steps, features)`` and a feature map ``(batch, channels, steps)`` as different
    tensors, so the permute between them is a layer of its own, named after its source.
    """
    key = (move.source, move.want)
    name = moved.get(key)
    if name is None:
        base = f"{move.source}__{'channels_first' if move.want == 'channels' else 'features_last'}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        moved[key] = name
        layers.append(
            PermuteLayer(
                name=name,
                inputs=None if sequential else [move.source],
                source_class="weightio.layout_move",
                dims=move_dims(move),
            )
        )
    if inputs is None:
        return None
    return [name if src == move.source and i in _slots(inputs, move) else src
            for i, src in enumerate(inputs)]


def _read_split(entry: KerasLayerEntry, refusal: str | None) -> list[LayerBase]:
    """``ops.split``: one slice per output; refused by name where it cannot be read exactly
    (its outputs are separate tensors, so no single opaque layer can stand for it).
    """
    if refusal is None:
        try:
            return list(split_layers(entry))
        except NotExact as exc:
            refusal = str(exc)
    raise UnsupportedLayerError(refusal, layer=entry.name)


def _slots(inputs: list[str], move: LayoutMove) -> set[int]:
    """Every slot reading the moved tensor (``mha(x, x)`` reads it twice, in one form)."""
    return {i for i, src in enumerate(inputs) if src == move.source}

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
        UnsupportedLayerError: quantized layers, multi-output layer wiring, a shared layer whose
            calls read differently (one called twice reads as one spec layer per call).
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
    classes = model_classes(model_config)
    model_config, layer_weights = inline_nested(model_config, layer_weights)
    model_config, layer_weights, copies = split_calls(model_config, layer_weights)
    class_name = model_config.get("class_name")
    config = model_config.get("config") or {}
    layer_configs = config.get("layers")
    if not isinstance(layer_configs, list):
        raise MalformedFileError("the model config has no list of layers")
    sequential = class_name == "Sequential"
    forms = keras_forms(layer_configs, sequential=sequential)
    splits = multi_output_layers(layer_configs)
    tags = forms.tags
    taken = {str((raw.get("config") or {}).get("name") or raw.get("name") or "")
             for raw in layer_configs if isinstance(raw, dict)}
    moved: dict[tuple[str, str], str] = {}
    chains, chained = parameter_chains(layer_configs)

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
        if name in chained:
            continue  # read whole, as the chain's last layer
        if name in chains:
            pick, value = chains[name]
            wiring = functional_inputs(pick, str(pick.get("name")), multi_output=splits)
            layers.append(parameter_layer(name, wiring, value, tensors))
            continue
        wiring = None if sequential else functional_inputs(raw, name, multi_output=splits)
        for move in forms.moves.get(name, []):
            wiring = _insert_move(move, wiring, layers, moved, taken, sequential)
        entry = KerasLayerEntry(
            name=name,
            class_name=layer_class,
            module=raw.get("module") if isinstance(raw.get("module"), str) else None,
            config=raw["config"],
            weights=[np.asarray(w) for w in layer_weights.get(name, [])],
            inputs=wiring,
            raw=raw,
            input_tags=forms.input_tags.get(name, []),
            output_tag=tags.get(name, "plain"),
        )
        foreign = foreign_layer(raw)
        refusal = (f"it names {foreign}; weightio maps only Keras' own classes" if foreign
                   else layout_refusal(entry))
        if name in splits:
            layers.extend(_read_split(entry, refusal))
            continue
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
        order = endpoint_names(config.get("input_layers", []), multi_output=splits)
        by_name = {inp.name: inp for inp in inputs}
        inputs = [by_name[n] for n in order if n in by_name] + [
            i for i in inputs if i.name not in order
        ]
        outputs = [
            OutputSpec(name=n, layer=n)
            for n in endpoint_names(config.get("output_layers", []), multi_output=splits)
        ]

    prov = provenance.model_copy(
        update={"transforms": sorted(set(provenance.transforms) | set(transforms))}
    )
    layers = share_tensors(layers, tensors.arrays, copies)
    spec_data = {
        "name": str(config.get("name") or "keras_model"),
        "provenance": prov.model_dump(),
        "inputs": [i.model_dump() for i in inputs],
        "layers": [layer.model_dump() for layer in layers],
        "outputs": [o.model_dump() for o in outputs],
    }
    if classes:
        spec_data["extra"] = {"keras": {"model_classes": classes}}
    spec: ModelSpec = spec_from_data(spec_data)
    return Archive(spec, tensors.arrays)
