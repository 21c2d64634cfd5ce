"""Nested Keras models (a base model used as a layer: transfer learning) inlined as their layers.

Keras-free. A Sequential or Functional model used as a layer of another is serialized as one
layer entry whose config holds its own ``layers``. Before any layer is mapped, such an entry is
replaced by its layers, each named ``<model>/<layer>`` (``mobilenetv2_1.00_32/block_1_expand``;
twice nested: ``outer/inner/dense``). Keras forbids ``/`` in layer names, so the prefix always
says exactly where a layer sat, and a writer can rebuild the nesting from it. Inside, the inner
model's inputs become the tensors the outer call passed; outside, a reference to the inner
model's output ``k`` becomes a reference to the inner layer producing it. A model with nesting
is read as one Functional graph (a Sequential outer model becomes a chain).

Arrays are looked up by the same full names (``layer_weights["outer/inner/dense"]``): the live
reader and the ``.keras`` reader both collect them so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from weightio.errors import MalformedFileError, UnsupportedLayerError, UnsupportedSourceError
from weightio.frameworks.keras.activations import short
from weightio.frameworks.keras.read.graph import node_refs, sequential_build_input

#: Between a nested model's name and its layer's: ``outer/inner``. Keras forbids it in names.
NEST = "/"
#: The serialized classes of a model that can be used as a layer.
MODEL_CLASSES = ("Sequential", "Functional", "Model")

Ref = tuple[str, int, int]


def is_model(raw: Any) -> bool:
    """Whether a serialized layer entry is a Sequential/Functional model holding layers."""
    return (
        isinstance(raw, dict)
        and raw.get("class_name") in MODEL_CLASSES
        and isinstance(raw.get("config"), dict)
        and isinstance(raw["config"].get("layers"), list)
    )


def has_nested_models(model_config: Mapping[str, Any]) -> bool:
    """Whether any layer of the model is itself a model."""
    layers = (model_config.get("config") or {}).get("layers")
    return isinstance(layers, list) and any(is_model(raw) for raw in layers)


def _name(raw: dict[str, Any]) -> str:
    return str(raw["config"].get("name") or raw.get("name") or "")


def _tensor(ref: Ref, shape: Any = None) -> dict[str, Any]:
    config: dict[str, Any] = {"keras_history": list(ref)}
    if shape is not None:
        config["shape"] = shape
    return {"class_name": "__keras_tensor__", "config": config}


def _layers(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    layers = (model.get("config") or {}).get("layers")
    if not isinstance(layers, list) or not all(
        isinstance(raw, dict) and isinstance(raw.get("config"), dict) for raw in layers
    ):
        raise MalformedFileError(f"the model {short(model.get('class_name'))} has no list of layers")
    return layers


def _as_functional(model: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any], list[Any]]:
    """A model's layers in the Functional form (each with its ``inbound_nodes``) and endpoints.

    A Sequential's layers are chained: each reads the one before, the first the model's input
    (its ``InputLayer``, or the input a synthetic name stands for when it has none).
    """
    layers = _layers(model)
    config = model.get("config") or {}
    if model.get("class_name") != "Sequential":
        return layers, config.get("input_layers", []), config.get("output_layers", [])
    chained: list[dict[str, Any]] = []
    previous: str | None = None
    first_input: str | None = None
    for raw in layers:
        entry = dict(raw)
        name = _name(raw)
        entry["name"] = name
        if raw.get("class_name") == "InputLayer":
            entry["inbound_nodes"] = []
            first_input = first_input or name
        else:
            if previous is None:  # no InputLayer: the model's input, bound by the caller
                previous = first_input = _SEQUENTIAL_INPUT
            build = raw.get("build_config")
            shape = build.get("input_shape") if isinstance(build, dict) else None
            entry["inbound_nodes"] = [{"args": [_tensor((previous, 0, 0), shape)], "kwargs": {}}]
        previous = name
        chained.append(entry)
    if first_input is None or previous is None:
        raise UnsupportedSourceError(f"the nested Sequential {config.get('name')!r} has no layers")
    return chained, [first_input, 0, 0], [previous, 0, 0]


#: What a Sequential without an InputLayer calls its input while it is inlined.
_SEQUENTIAL_INPUT = "\x00input"


def endpoint_refs(value: Any) -> list[Ref]:
    """``[name, 0, 0]`` or a list (or dict) of them, as references."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, (list, tuple)):
        raise MalformedFileError(f"model endpoints {short(value)} are not a list")
    if len(value) == 3 and isinstance(value[0], str) and not isinstance(value[1], (list, dict)):
        return [_ref(value, value)]
    refs: list[Ref] = []
    for item in value:
        refs.extend([(item, 0, 0)] if isinstance(item, str) else endpoint_refs(item))
    return refs


def _ref(history: Any, where: Any) -> Ref:
    """``[layer, node, tensor]`` as a reference; anything else is a malformed config."""
    if (isinstance(history, (list, tuple)) and len(history) == 3 and isinstance(history[0], str)
            and all(type(i) is int and i >= 0 for i in history[1:])):
        return (history[0], history[1], history[2])
    raise MalformedFileError(f"a tensor reference is not [layer, node, tensor]: {short(where)}")


def rewrite_refs(value: Any, resolve: Any) -> Any:
    """A copy of a node with every ``keras_history`` reference passed through ``resolve``."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__" and isinstance(value.get("config"), dict):
            config = dict(value["config"])
            config["keras_history"] = list(resolve(_ref(config.get("keras_history"), value)))
            return {**value, "config": config}
        return {key: rewrite_refs(item, resolve) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(item, (list, tuple)) and len(item) >= 3 and isinstance(item[0], str)
                         for item in value):  # a Keras 2 node: [[name, node, tensor, kwargs], ...]
            return [[*resolve(_ref(item[:3], value)), *item[3:]] for item in value]
        return [rewrite_refs(item, resolve) for item in value]
    return value


def _call_refs(raw: dict[str, Any], name: str) -> list[Ref]:
    """The tensors a nested model's single call reads, in argument order."""
    nodes = raw.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise MalformedFileError(f"inbound_nodes {short(nodes)} is not a list", layer=name)
    if len(nodes) > 1:
        raise UnsupportedLayerError(
            f"this nested model is called {len(nodes)} times (shared weights); weightio's graph "
            "has one call per layer. Give each call its own copy of the model",
            layer=name,
        )
    return node_refs(nodes[0], name) if nodes else []


class _Inliner:
    def __init__(self, weights: Mapping[str, list[np.ndarray]]) -> None:
        self.weights = weights
        self.layers: list[dict[str, Any]] = []
        self.weights_out: dict[str, list[np.ndarray]] = {}
        self.names: set[str] = set()

    def model(self, model: Mapping[str, Any], prefix: str, bound: list[Ref] | None) -> list[Ref]:
        """Append ``model``'s layers (nested ones inlined) named ``prefix + name``; return the
        references its outputs resolve to. ``bound`` is what its inputs stand for (None at the
        top, where its ``InputLayer`` entries stay).
        """
        layers, input_endpoints, output_endpoints = _as_functional(model)
        inputs = [ref[0] for ref in endpoint_refs(input_endpoints)]
        binding: dict[str, Ref] = {}
        if bound is not None:
            if len(bound) != len(inputs):
                raise UnsupportedLayerError(
                    f"this nested model takes {len(inputs)} input(s) and is called with {len(bound)}",
                    layer=prefix.rstrip(NEST),
                )
            binding = dict(zip(inputs, bound, strict=True))
        elif _SEQUENTIAL_INPUT in inputs:
            binding[_SEQUENTIAL_INPUT] = ("input_layer", 0, 0)  # named as sequential_build_input
        outputs_of: dict[str, list[Ref]] = {}
        functional: set[str] = set()

        def resolve(ref: Ref, endpoint: bool = False) -> Ref:
            source, node, tensor = ref
            if source in binding:
                return binding[source]
            if source in outputs_of:
                outs = outputs_of[source]
                # Keras numbers a nested Functional's calls from 1 in ``output_layers`` (its
                # own construction counts as node 0 there), from 0 in ``inbound_nodes``
                first = 1 if endpoint and source in functional else 0
                if node != first or tensor >= len(outs):
                    raise UnsupportedLayerError(
                        f"reads output {tensor} of call {node} of the nested model {source!r}, "
                        f"which has {len(outs)} output(s) and one call",
                        layer=prefix + source,
                    )
                return outs[tensor]
            return (prefix + source, node, tensor)

        for raw in layers:
            name = _name(raw)
            if raw.get("class_name") == "InputLayer" and bound is not None:
                continue
            full = prefix + name
            if is_model(raw):
                outputs_of[name] = self.model(raw, full + NEST, [resolve(r) for r in _call_refs(raw, full)])
                if raw.get("class_name") != "Sequential":
                    functional.add(name)
                continue
            if full in self.names:
                raise MalformedFileError(
                    "two layers are named this way (a layer's own name holds '/' and repeats a "
                    "nested model's path)", layer=full,
                )
            self.names.add(full)
            entry = {**raw, "name": full, "config": {**raw["config"], "name": full}}
            if "inbound_nodes" in raw:
                entry["inbound_nodes"] = rewrite_refs(raw["inbound_nodes"], resolve)
            self.layers.append(entry)
            if raw.get("class_name") != "InputLayer":
                self.weights_out[full] = self._arrays(full, prefix)
        return [resolve(ref, endpoint=True) for ref in endpoint_refs(output_endpoints)]

    def _arrays(self, full: str, prefix: str) -> list[np.ndarray]:
        if full in self.weights:
            return self.weights[full]
        owner = prefix.split(NEST, 1)[0]
        # the model's arrays as one list and none per layer: which are whose is unknown (a
        # layer missing among per-layer arrays is an operation, keras.ops.add: no arrays)
        if prefix and self.weights.get(owner) and not any(k.startswith(prefix) for k in self.weights):
            raise UnsupportedSourceError(
                f"the arrays of the nested model {owner!r} are given as one list, not per "
                f"layer; pass them by the inner layers' names ({full!r})",
                layer=full,
            )
        return []


def model_classes(model_config: Mapping[str, Any]) -> dict[str, str]:
    """The class of the model and of each nested model by its ``/`` path (``""`` for the model
    itself): ``{"": "Sequential", "mobilenetv2": "Functional"}``; empty without nesting.

    Inlining reads every model as one Functional graph; this is what lets a writer give a user's
    ``Sequential`` back as one (``spec.extra["keras"]["model_classes"]``, never used to compute).
    """
    if not has_nested_models(model_config):
        return {}
    found: dict[str, str] = {}

    def walk(raw: Mapping[str, Any], path: str) -> None:
        found[path] = "Sequential" if raw.get("class_name") == "Sequential" else "Functional"
        for layer in (raw.get("config") or {}).get("layers") or []:
            if is_model(layer):
                walk(layer, f"{path}{NEST}{_name(layer)}" if path else _name(layer))

    walk(model_config, "")
    return found


def inline_nested(
    model_config: Mapping[str, Any], layer_weights: Mapping[str, list[np.ndarray]]
) -> tuple[dict[str, Any], Mapping[str, list[np.ndarray]]]:
    """``model_config`` with every nested model replaced by its layers, and their arrays.

    Unchanged when no layer is a model. Otherwise a Functional config whose layers are named
    ``<model>/<layer>`` inside nested models, and the arrays by those names.
    """
    if not has_nested_models(model_config):
        return dict(model_config), layer_weights
    inliner = _Inliner(layer_weights)
    sequential = model_config.get("class_name") == "Sequential"
    outputs = inliner.model(model_config, "", None)
    layers = inliner.layers
    config = dict(model_config.get("config") or {})
    if sequential and not any(raw.get("class_name") == "InputLayer" for raw in layers):
        built = sequential_build_input(dict(model_config))
        if built is None:
            raise UnsupportedSourceError(
                "this Sequential model was never built, so its input shape is unknown; start it "
                "with keras.Input(shape=...) or call model.build((None, ...)) first"
            )
        taken = {_name(raw) for raw in layers}
        if built.name in taken:
            raise UnsupportedSourceError("the Sequential model's input name is taken by a layer",
                                         layer=built.name)
        layers.insert(0, {
            "class_name": "InputLayer", "module": "keras.layers", "name": built.name,
            "config": {"name": built.name, "batch_shape": [None, *built.shape],
                       "dtype": _KERAS_DTYPE.get(built.dtype, "float32")},
            "inbound_nodes": [],
        })
    if sequential:
        config["input_layers"] = [[_name(layers[0]), 0, 0]]
    config["layers"] = layers
    config["output_layers"] = [list(ref) for ref in outputs]
    return {**model_config, "class_name": "Functional", "config": config}, inliner.weights_out


_KERAS_DTYPE = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
