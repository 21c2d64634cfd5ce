"""``fold``: the same function in fewer layers and plain weights.

* **Batch norm into the conv or dense before it.** With ``s = gamma / sqrt(running_var + eps)``
  per output channel: ``W' = W * s`` (along the output axis) and ``b' = (b - running_mean) * s +
  beta``, computed in float64 and stored in the weight's dtype: exact up to that one rounding.
  Folded only where the conv/dense has no activation of its own, its output is read by the batch
  norm alone (and is no model output), and the batch norm runs over its output channels.
* **Dropout and identity layers removed** (both are the identity at inference).
* **Weight norm into plain weights** (torch ``weight_norm``: ``weight_g``/``weight_v``;
  ``parametrizations.weight_norm``: ``parametrizations.weight.original0``/``original1``):
  ``weight = g * v / ||v||``, the norm over every axis where ``g`` has size 1 (over all of ``v``
  when ``g`` is a scalar), as torch computes it. These live in weights-only archives (a state
  dict), whose layers are opaque; the result is the state dict of the plain module. A dense or
  conv weight in weight-norm form (encoding ``weight_norm``, made by ``weightio.weight_norm``)
  is decoded by the same rule (``weightio.format.encoding``) into a plain weight.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.format.archive import Archive, plain
from weightio.spec.model import activation_shapes
from weightio.transforms.graph import Wiring, free_key
from weightio.transforms.measure import TransformResult, finish

__all__ = ["fold_archive"]

#: Weight-norm parameter pairs: (magnitude suffix, direction suffix) of one parameter's name.
_WEIGHT_NORM = (("_g", "_v"),)
_PARAMETRIZED = ".parametrizations."


def fold_archive(
    archive: Archive, *, seed: int = 0, samples: int = 8, max_change: float | None = None
) -> TransformResult:
    """Fold ``archive`` (see the module's docstring); measured against it."""
    original = archive
    rows: list[dict[str, Any]] = [  # weight-norm form (``weightio.weight_norm``) made plain
        {"layer": layer.name, "action": f"weight norm {ref.key}, {ref.encoding.scale.key} -> {ref.key}"}
        for layer, _, ref in archive.spec.tensor_refs()
        if ref.encoding is not None and ref.encoding.scheme == "weight_norm"
    ]
    archive = plain(archive)
    wiring = Wiring(archive.spec)
    tensors = {key: np.asarray(archive.tensors[key]) for key in archive.tensors}
    for index, layer in enumerate(wiring.data["layers"]):
        if layer["kind"] in ("dropout", "identity") and len(wiring.inputs[index]) == 1:
            wiring.remove(index, replacement=wiring.inputs[index][0])
            rows.append({"layer": layer["name"], "action": f"removed ({layer['kind']})"})
    _fold_batch_norms(archive, wiring, tensors, rows)
    data = wiring.finish()
    _fold_weight_norms(data, tensors, rows)
    kept = {ref["key"] for layer in data["layers"] for ref in _refs(layer)}
    tensors = {key: value for key, value in tensors.items() if key in kept}
    counts = _count(rows)
    line = f"fold: {counts}" if rows else "fold: nothing to fold"
    return finish("fold", original, data, tensors, [line], layers=rows, notes=[counts or "nothing to fold"],
                  seed=seed, samples=samples, max_change=max_change)


def _count(rows: list[dict[str, Any]]) -> str:
    kinds: dict[str, int] = {}
    for row in rows:
        what = row["action"].split(" into ")[0].split(" (")[0]
        what = "weight norm" if what.startswith("weight norm") else what
        kinds[what] = kinds.get(what, 0) + 1
    words = {"folded batch norm": "batch norm(s) folded", "removed": "dropout/identity layer(s) removed",
             "weight norm": "weight norm(s) made plain"}
    return ", ".join(f"{n} {words.get(k, k)}" for k, n in kinds.items())


def _refs(layer: dict[str, Any]) -> list[dict[str, Any]]:
    if layer["kind"] == "opaque":
        return list(layer.get("tensors", {}).values())
    return [v for v in layer.values() if isinstance(v, dict) and "key" in v and "shape" in v]


def _fold_batch_norms(archive: Archive, wiring: Wiring, tensors: dict[str, np.ndarray],
                      rows: list[dict[str, Any]]) -> None:
    spec = archive.spec
    if spec.weights_only:
        return
    shapes = activation_shapes(spec)
    taken = set(tensors)
    layers = wiring.data["layers"]
    for index, norm in enumerate(spec.layers):
        if norm.kind != "batch_norm" or len(wiring.inputs[index]) != 1:
            continue
        source = wiring.inputs[index][0]
        at = wiring.index(source)
        if at is None:
            continue
        producer = layers[at]
        if producer["kind"] not in ("conv", "dense") or producer["activation"]["name"] != "linear":
            continue
        if wiring.readers(source) != [index] or wiring.is_output(source):
            continue
        shape = shapes.get(source)
        rank = None if shape is None else len(shape) + 1
        axis = norm.axis if norm.axis > 0 or rank is None else norm.axis + rank
        wanted = 1 if producer["kind"] == "conv" else (None if rank is None else rank - 1)
        if axis != wanted and not (producer["kind"] == "dense" and norm.axis == -1):
            continue
        _fold_one(norm, producer, tensors, taken, archive)
        wiring.remove(index, replacement=source)
        rows.append({"layer": norm.name, "action": f"folded batch norm into {producer['name']}"})


def _fold_one(norm: Any, producer: dict[str, Any], tensors: dict[str, np.ndarray], taken: set[str],
              archive: Archive) -> None:
    weight_ref = producer["weight"]
    weight = tensors[weight_ref["key"]]
    dtype = weight.dtype
    features = weight.shape[0]

    def vector(ref: Any, default: float) -> np.ndarray:
        if ref is None:
            return np.full(features, default)
        return np.asarray(archive.tensors[ref.key], dtype=np.float64)

    scale = vector(norm.weight, 1.0) / np.sqrt(vector(norm.running_var, 1.0) + norm.eps)
    shift = vector(norm.bias, 0.0) - vector(norm.running_mean, 0.0) * scale
    folded = weight.astype(np.float64) * scale.reshape((features,) + (1,) * (weight.ndim - 1))
    tensors[weight_ref["key"]] = folded.astype(dtype)
    bias_ref = producer.get("bias")
    bias = np.zeros(features) if bias_ref is None else tensors[bias_ref["key"]].astype(np.float64)
    new_bias = (bias * scale + shift).astype(dtype)
    if bias_ref is None:
        key = free_key(taken, f"{producer['name']}.bias")
        bias_ref = {"key": key, "shape": [features], "dtype": weight_ref["dtype"]}
        producer["bias"] = bias_ref
        producer["use_bias"] = True
    tensors[bias_ref["key"]] = new_bias


def _fold_weight_norms(data: dict[str, Any], tensors: dict[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
    """Weight-norm pairs of opaque layers into plain parameters (see the module's docstring)."""
    layers = data["layers"]
    by_name = {layer["name"]: layer for layer in layers}
    drop: set[str] = set()
    for layer in layers:
        if layer["kind"] != "opaque":
            continue
        params = layer.get("tensors", {})
        for name in list(params):
            for g_end, v_end in _WEIGHT_NORM:
                base = name[: -len(g_end)]
                if name.endswith(g_end) and base + v_end in params:
                    g_ref, v_ref = params[name], params[base + v_end]
                    plain = _plain(tensors.pop(g_ref["key"]), tensors.pop(v_ref["key"]))
                    key = v_ref["key"][: -len(v_end)]
                    tensors[key] = plain
                    new = {}
                    for param, ref in params.items():  # the plain parameter where g stood
                        if param == name:
                            new[base] = {"key": key, "shape": list(plain.shape), "dtype": v_ref["dtype"]}
                        elif param != base + v_end:
                            new[param] = ref
                    params = layer["tensors"] = new
                    rows.append({"layer": layer["name"], "action": f"weight norm {name}, {base + v_end} -> {base}"})
        if _PARAMETRIZED in layer["name"] and set(params) == {"original0", "original1"}:
            owner, _, param = layer["name"].rpartition(_PARAMETRIZED)
            g_ref, v_ref = params["original0"], params["original1"]
            plain = _plain(tensors.pop(g_ref["key"]), tensors.pop(v_ref["key"]))
            key = f"{owner}.{param}"
            tensors[key] = plain
            ref = {"key": key, "shape": list(plain.shape), "dtype": v_ref["dtype"]}
            target = by_name.get(owner)
            if target is not None and target["kind"] == "opaque" and param not in target.get("tensors", {}):
                target["tensors"] = {param: ref, **target.get("tensors", {})}
                drop.add(layer["name"])
            else:
                layer["name"], layer["tensors"] = owner, {param: ref}
            rows.append({"layer": owner, "action": f"weight norm parametrizations.{param}.original0/1 -> {param}"})
    data["layers"] = [layer for layer in layers if layer["name"] not in drop]


def _plain(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``g * v / ||v||`` in float64, as torch's ``_weight_norm`` computes it, in ``v``'s dtype."""
    g64, v64 = np.asarray(g, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if g64.ndim == 0 or g64.size == 1 and v64.ndim != g64.ndim:
        norm = np.sqrt(np.sum(v64 * v64))
    else:
        axes = tuple(ax for ax in range(v64.ndim) if g64.shape[ax] == 1)
        norm = np.sqrt(np.sum(v64 * v64, axis=axes, keepdims=True))
    return (g64 * v64 / norm).astype(v.dtype)
