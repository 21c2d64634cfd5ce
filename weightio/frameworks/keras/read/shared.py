"""A Keras layer called more than once (a siamese encoder, ``d(d(x))``) read as one spec layer
per call, every call reading the same tensors.

Keras-free. Keras serializes a shared layer once, with one inbound node per call; other layers
name the call they read as ``[layer, node_index, tensor_index]``. weightio's graph has one call
per layer, so before any layer is mapped, ``split_calls`` gives call ``k > 0`` its own config
entry, ``<layer>__call<k>``, reading that call's inputs, and points every reference to call ``k``
at it. The arrays are the same arrays. Once mapped, ``share_tensors`` makes the copies reference
the first call's tensors, so the archive stores each tensor once (format "Shared tensors"), the
torch writer ties the parameters, and inspect counts them once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.frameworks.keras.activations import short
from weightio.frameworks.keras.read.nested import Ref, endpoint_refs, rewrite_refs
from weightio.spec.base import LayerBase
from weightio.spec.tensors import TensorRef


def call_name(layer: str, call: int) -> str:
    """The spec name of call ``call`` (``>= 1``) of a shared Keras layer."""
    return f"{layer}__call{call}"


def split_calls(
    model_config: Mapping[str, Any], layer_weights: Mapping[str, list[np.ndarray]]
) -> tuple[dict[str, Any], Mapping[str, list[np.ndarray]], dict[str, str]]:
    """``model_config`` with each further call of a shared layer as its own entry.

    Returns the config, the arrays (a copy's are its layer's), and ``{copy: layer}``. A
    Functional model only (a Sequential calls each layer once); unchanged when no layer is
    called twice.
    """
    config = dict(model_config.get("config") or {})
    layers = config.get("layers")
    if model_config.get("class_name") == "Sequential" or not isinstance(layers, list):
        return dict(model_config), layer_weights, {}
    calls = {}
    for raw in layers:
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
            nodes = raw.get("inbound_nodes")
            if isinstance(nodes, list) and len(nodes) > 1:
                calls[str(raw["config"].get("name") or raw.get("name") or "")] = len(nodes)
    if not calls:
        return dict(model_config), layer_weights, {}
    taken = {str((raw.get("config") or {}).get("name") or raw.get("name") or "")
             for raw in layers if isinstance(raw, dict)}
    copies: dict[str, str] = {}
    names: dict[tuple[str, int], str] = {}
    for layer, count in calls.items():
        for call in range(1, count):
            copy = call_name(layer, call)
            if copy in taken:
                raise UnsupportedLayerError(
                    f"a layer is already named {copy!r}, the name weightio gives call {call} of "
                    "this shared layer; rename that layer", layer=layer,
                )
            names[(layer, call)] = copy
            copies[copy] = layer

    def resolve(ref: Ref) -> Ref:
        source, node, tensor = ref
        if node and (source, node) in names:
            return (names[(source, node)], 0, tensor)
        return ref

    out: list[Any] = []
    weights = dict(layer_weights)
    for raw in layers:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            out.append(raw)
            continue
        name = str(raw["config"].get("name") or raw.get("name") or "")
        nodes = raw.get("inbound_nodes")
        if name not in calls:
            out.append({**raw, "inbound_nodes": rewrite_refs(nodes, resolve)} if nodes else raw)
            continue
        for call, node in enumerate(nodes):
            entry_name = name if call == 0 else names[(name, call)]
            out.append({**raw, "name": entry_name, "config": {**raw["config"], "name": entry_name},
                        "inbound_nodes": [rewrite_refs(node, resolve)]})
            if call:
                weights[entry_name] = list(layer_weights.get(name, []))
    config["layers"] = out
    for key in ("input_layers", "output_layers"):
        if key in config:
            config[key] = [list(resolve(ref)) for ref in endpoint_refs(config[key])]
    return {**model_config, "config": config}, weights, copies


def share_tensors(layers: list[LayerBase], arrays: dict[str, np.ndarray],
                  copies: Mapping[str, str]) -> list[LayerBase]:
    """``layers`` with each copy (``split_calls``) reading its layer's tensors; the copies' own
    arrays are dropped from ``arrays``.

    Raises:
        UnsupportedLayerError: a copy whose parameters are not the first call's, name for name
            and shape for shape (a layer that reads differently per call cannot share).
    """
    if not copies:
        return layers
    by_name = {layer.name: layer for layer in layers}
    out = []
    for layer in layers:
        original = by_name.get(copies.get(layer.name, ""))
        if original is None:
            out.append(layer)
            continue
        mine, theirs = layer.tensor_refs(), original.tensor_refs()
        if (mine.keys() != theirs.keys() or type(layer) is not type(original)
                or any(mine[p].shape != theirs[p].shape or mine[p].dtype != theirs[p].dtype for p in mine)
                or any(not isinstance(getattr(layer, p, None), TensorRef) for p in mine)):
            raise UnsupportedLayerError(
                f"this call of the shared layer {original.name!r} maps to other parameters than "
                f"its first call ({short(sorted(mine))} against {short(sorted(theirs))}); weightio "
                "shares tensors only between calls that read them alike", layer=layer.name,
            )
        for ref in mine.values():
            arrays.pop(ref.key, None)
        out.append(layer.model_copy(update=dict(theirs)))
    return out

