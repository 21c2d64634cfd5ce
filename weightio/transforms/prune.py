"""``prune``: magnitude pruning, unstructured or structured, to a target sparsity.

* **Unstructured** (``structured=False``): in each selected layer's weight tensors the
  ``round(sparsity * size)`` entries of smallest ``|w|`` become 0 (ties: the first in C order).
  ``scope="layer"`` does so per layer; ``scope="global"`` ranks every selected weight together,
  so layers with small weights lose more. Biases and normalisation parameters are kept. Shapes
  do not change: the archive holds zeros.
* **Structured** (``structured=True``): whole conv filters or dense units go, ranked by the L1
  (or L2) norm of their weights; ``floor(sparsity * units)`` per layer, at least one kept. The
  layer shrinks, and so does everything reading its output: a batch norm's vectors, then the
  input channels (or, through a flatten, the input features) of the next conv or dense. A layer
  is kept whole, and said why, when its output reaches anything else first (a model output, an
  addition, a concatenation, a reshape, a softmax, a grouped convolution).

Layers are selected by ``include``/``exclude``: each entry a layer name, a glob of names
(``"features.*"``) or a kind (``"conv"``); by default every conv and dense layer (and, in a
weights-only archive, every tensor of two or more axes).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from weightio.errors import InvalidInputError, SpecValidationError
from weightio.format.archive import Archive
from weightio.spec.model import activation_shapes
from weightio.transforms.measure import TransformResult, finish

__all__ = ["PRUNABLE", "check_prune_options", "prune_archive"]

#: Kinds whose weights unstructured pruning zeroes, by default.
PRUNABLE = ("conv", "dense", "conv_transpose", "separable_conv")
#: Weight parameters (biases and norms are never pruned).
_WEIGHTS = ("weight", "depthwise_weight", "pointwise_weight")
#: Kinds a pruned layer's channels pass through unchanged, to the next conv or dense.
_PASS = ("activation", "dropout", "identity", "pool", "global_pool", "zero_padding", "upsampling")
_NOT_ELEMENTWISE = ("softmax", "log_softmax")


def check_prune_options(sparsity: float, scope: str, norm: str, structured: bool) -> None:
    """Refuse bad option values before any work (``InvalidInputError``, naming the option)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise InvalidInputError(f"sparsity must be a number from 0 to below 1. Received: sparsity={sparsity!r}")
    if scope not in ("layer", "global"):
        raise InvalidInputError(f"scope must be 'layer' or 'global'. Received: scope={scope!r}")
    if norm not in ("l1", "l2"):
        raise InvalidInputError(f"norm must be 'l1' or 'l2'. Received: norm={norm!r}")
    if structured and scope == "global":
        raise InvalidInputError(
            "structured pruning is per layer (norms of different layers' filters are not "
            "comparable); drop scope='global' (CLI: --scope global) or prune unstructured"
        )


def _patterns(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _matches(layer: Any, patterns: list[str]) -> bool:
    return any(p == layer.kind or fnmatch.fnmatchcase(layer.name, p) for p in patterns)


def select(archive: Archive, include: Any, exclude: Any, kinds: tuple[str, ...]) -> list[Any]:
    """The layers to prune; ``SpecValidationError`` for a pattern that matches no layer."""
    spec = archive.spec
    wanted, unwanted = _patterns(include), _patterns(exclude) or []
    for pattern in [*(wanted or []), *unwanted]:
        if not any(_matches(layer, [pattern]) for layer in spec.layers):
            names = ", ".join(layer.name for layer in spec.layers[:20])
            raise SpecValidationError(
                f"{pattern!r} names no layer and no layer kind of this archive (its layers: {names}"
                f"{' …' if len(spec.layers) > 20 else ''})"
            )
    chosen = []
    for layer in spec.layers:
        if wanted is not None and not _matches(layer, wanted):
            continue
        if _matches(layer, unwanted):
            continue
        if layer.kind in kinds or (layer.kind == "opaque" and spec.weights_only):
            chosen.append(layer)
    return chosen


def _weight_params(layer: Any) -> dict[str, Any]:
    refs = layer.tensor_refs()
    if layer.kind == "opaque":
        return {p: r for p, r in refs.items() if len(r.shape) >= 2}
    return {p: r for p, r in refs.items() if p in _WEIGHTS}


def prune_archive(
    archive: Archive,
    sparsity: float,
    *,
    structured: bool = False,
    scope: str = "layer",
    norm: str = "l1",
    include: Any = None,
    exclude: Any = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
) -> TransformResult:
    """Prune ``archive`` (see the module's docstring); measured against it."""
    check_prune_options(sparsity, scope, norm, structured)
    if structured:
        return _structured(archive, sparsity, norm, include, exclude, seed, samples, max_change)
    layers = select(archive, include, exclude, PRUNABLE)
    tensors = {key: np.asarray(archive.tensors[key]) for key in archive.tensors}
    targets = [(layer, ref) for layer in layers for ref in _weight_params(layer).values()
               if np.asarray(archive.tensors[ref.key]).dtype.kind == "f"]
    if scope == "global" and targets:
        magnitudes = np.concatenate([np.abs(tensors[ref.key].astype(np.float64)).ravel() for _, ref in targets])
        count = round(sparsity * magnitudes.size)
        order = np.argsort(magnitudes, kind="stable")[:count]
        mask = np.ones(magnitudes.size, bool)
        mask[order] = False
        start = 0
        for _, ref in targets:
            size = math.prod(ref.shape)
            tensors[ref.key] = np.where(mask[start:start + size].reshape(ref.shape), tensors[ref.key], 0).astype(
                tensors[ref.key].dtype)
            start += size
    else:
        for _, ref in targets:
            tensors[ref.key] = _zero_smallest(tensors[ref.key], sparsity)
    rows = []
    for layer in layers:
        refs = _weight_params(layer)
        size = sum(math.prod(r.shape) for r in refs.values())
        before = sum(int(np.count_nonzero(archive.tensors[r.key])) for r in refs.values())
        after = sum(int(np.count_nonzero(tensors[r.key])) for r in refs.values())
        params = sum(math.prod(r.shape) for r in layer.tensor_refs().values())
        rows.append({"layer": layer.name, "kind": layer.kind, "parameters_before": params,
                     "parameters_after": params, "nonzero_before": before, "nonzero_after": after,
                     "sparsity": 1 - after / size if size else 0.0})
    zeros = sum(r["nonzero_before"] - r["nonzero_after"] for r in rows)
    line = (f"prune: magnitude, unstructured, {scope} scope, target sparsity {sparsity:g}: "
            f"{zeros:,} weight(s) of {len(rows)} layer(s) set to 0")
    return finish("prune", archive, archive.spec.model_dump(mode="json"), tensors, [line], layers=rows,
                  notes=[line.split(": ", 1)[1]], seed=seed, samples=samples, max_change=max_change)


def _zero_smallest(array: np.ndarray, sparsity: float) -> np.ndarray:
    flat = array.ravel()
    count = round(sparsity * flat.size)
    order = np.argsort(np.abs(flat.astype(np.float64)), kind="stable")[:count]
    out = flat.copy()
    out[order] = 0
    return out.reshape(array.shape)


# -- structured ------------------------------------------------------------------------------


class _Kept(Exception):
    """A layer that cannot shrink, and why."""


def _structured(archive: Archive, sparsity: float, norm: str, include: Any, exclude: Any,
                seed: int, samples: int, max_change: float | None) -> TransformResult:
    spec = archive.spec
    if spec.weights_only:
        raise SpecValidationError(
            "structured pruning needs the architecture (which layer reads which); this archive "
            "holds weights only: read the model itself, or prune unstructured"
        )
    chosen = select(archive, include, exclude, ("conv", "dense"))
    data = spec.model_dump(mode="json")
    layers = {layer["name"]: layer for layer in data["layers"]}
    tensors = {key: np.asarray(archive.tensors[key]) for key in archive.tensors}
    shapes = activation_shapes(spec)
    readers: dict[str, list[int]] = {}
    for index in range(len(spec.layers)):
        for source in spec.layer_inputs(index):
            readers.setdefault(source, []).append(index)
    outputs = {out.layer for out in spec.outputs}
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for layer in chosen:
        row = {"layer": layer.name, "kind": layer.kind,
               "parameters_before": sum(math.prod(r.shape) for r in layer.tensor_refs().values())}
        if layer.kind == "conv" and layer.groups != 1:
            notes.append(f"kept {layer.name} whole: a grouped convolution")
            continue
        weight = tensors[layers[layer.name]["weight"]["key"]]
        units = weight.shape[0]
        drop = min(math.floor(sparsity * units), units - 1)
        if drop == 0:
            continue
        flat = weight.reshape(units, -1).astype(np.float64)
        scores = np.abs(flat).sum(axis=1) if norm == "l1" else np.sqrt((flat * flat).sum(axis=1))
        keep = np.sort(np.argsort(scores, kind="stable")[drop:])
        try:
            edits = _downstream(spec, layer.name, keep, units, readers, outputs, shapes, layers, tensors)
        except _Kept as why:
            notes.append(f"kept {layer.name} whole: its output reaches {why}")
            continue
        _shrink_outputs(layers[layer.name], keep, tensors)
        for edit in edits:
            edit()
        row.update(units_before=units, units_after=int(keep.size),
                   parameters_after=sum(math.prod(tensors[r["key"]].shape) for r in _refs(layers[layer.name])),
                   sparsity=drop / units)
        rows.append(row)
    line = (f"prune: structured ({norm.upper()} norm), target sparsity {sparsity:g}: "
            + ("; ".join(f"{r['layer']}: {r['units_before']} -> {r['units_after']} "
                         f"{'filters' if r['kind'] == 'conv' else 'units'}" for r in rows) or "nothing pruned"))
    return finish("prune", archive, data, tensors, [line, *(f"prune: {n}" for n in notes)], layers=rows,
                  notes=[line.split(": ", 1)[1], *notes], seed=seed, samples=samples, max_change=max_change)


def _refs(layer: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in layer.values() if isinstance(v, dict) and "key" in v and "shape" in v]


def _take(tensors: dict[str, np.ndarray], ref: dict[str, Any], index: np.ndarray, axis: int) -> None:
    tensors[ref["key"]] = np.take(tensors[ref["key"]], index, axis=axis)
    ref["shape"] = list(tensors[ref["key"]].shape)


def _shrink_outputs(layer: dict[str, Any], keep: np.ndarray, tensors: dict[str, np.ndarray]) -> None:
    _take(tensors, layer["weight"], keep, 0)
    if layer.get("bias") is not None:
        _take(tensors, layer["bias"], keep, 0)
    layer["units" if layer["kind"] == "dense" else "out_channels"] = int(keep.size)


def _downstream(spec: Any, name: str, keep: np.ndarray, units: int, readers: dict[str, list[int]],
                outputs: set[str], shapes: dict[str, Any], layers: dict[str, Any],
                tensors: dict[str, np.ndarray]) -> list[Any]:
    """The edits that make every reader of ``name`` take only the ``keep`` channels (of ``units``)."""
    edits: list[Any] = []
    pending = [(name, keep, units)]
    while pending:
        source, kept, size = pending.pop()
        if source in outputs:
            raise _Kept(f"the model output {source!r}")
        for index in readers.get(source, []):
            reader = spec.layers[index]
            data = layers[reader.name]
            if len(spec.layer_inputs(index)) != 1:
                raise _Kept(f"{reader.kind} {reader.name!r}, which reads several inputs")
            if reader.kind in _PASS:
                activation = getattr(reader, "activation", None)
                if activation is not None and activation.name in _NOT_ELEMENTWISE:
                    raise _Kept(f"the {activation.name} {reader.name!r}")
                pending.append((reader.name, kept, size))
            elif reader.kind == "batch_norm" and reader.num_features == size:
                def norm_edit(data: dict[str, Any] = data, kept: np.ndarray = kept) -> None:
                    for field in ("weight", "bias", "running_mean", "running_var"):
                        if data.get(field) is not None:
                            _take(tensors, data[field], kept, 0)
                    data["num_features"] = int(kept.size)
                edits.append(norm_edit)
                pending.append((reader.name, kept, size))
            elif reader.kind == "flatten":
                shape = shapes.get(source)
                if shape is None or any(d is None for d in shape) or shape[0] != size:
                    raise _Kept(f"the flatten {reader.name!r}, of an input whose size is not fixed")
                spatial = math.prod(shape[1:])
                if reader.order == "channels_last":
                    index_map = (np.arange(spatial)[:, None] * size + kept[None, :]).ravel()
                else:
                    index_map = (kept[:, None] * spatial + np.arange(spatial)[None, :]).ravel()
                pending.append((reader.name, np.sort(index_map), size * spatial))
            elif reader.kind == "dense" and reader.in_features == size:
                def dense_edit(data: dict[str, Any] = data, kept: np.ndarray = kept) -> None:
                    _take(tensors, data["weight"], kept, 1)
                    data["in_features"] = int(kept.size)
                edits.append(dense_edit)
            elif reader.kind == "conv" and reader.groups == 1 and reader.in_channels == size:
                def conv_edit(data: dict[str, Any] = data, kept: np.ndarray = kept) -> None:
                    _take(tensors, data["weight"], kept, 1)
                    data["in_channels"] = int(kept.size)
                edits.append(conv_edit)
            else:
                raise _Kept(f"{reader.kind} {reader.name!r}")
    return edits
