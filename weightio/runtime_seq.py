"""Numpy reference for the normalisation, sequence and graph-operation kinds.

Registered into ``runtime.RUNTIME`` when ``weightio.runtime`` is imported. Same rules as the
core runtime: a few obvious lines per kind following docs/conventions.md, in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from weightio.errors import InvalidInputError, UnsupportedLayerError
from weightio.runtime import RUNTIME
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer
from weightio.spec.recurrent import EmbeddingLayer, RecurrentBase

Params = Mapping[str, np.ndarray]


def _along(vector: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of a rank-``rank`` array."""
    shape = [1] * rank
    shape[axis] = vector.shape[0]
    return vector.reshape(shape)


def _axis(axis: int, x: np.ndarray, layer: str) -> int:
    positive = axis if axis >= 0 else axis + x.ndim
    if not 0 < positive < x.ndim:
        raise InvalidInputError(
            f"axis {axis} is out of range for a rank-{x.ndim} input", layer=layer
        )
    return positive


@RUNTIME.register("batch_norm")
def _batch_norm(layer: BatchNormLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axis = _axis(layer.axis, x, layer.name)
    scale = 1.0 / np.sqrt(params["running_var"] + layer.eps)
    y = (x - _along(params["running_mean"], axis, x.ndim)) * _along(scale, axis, x.ndim)
    if "weight" in params:
        y = y * _along(params["weight"], axis, x.ndim)
    if "bias" in params:
        y = y + _along(params["bias"], axis, x.ndim)
    return y


@RUNTIME.register("layer_norm")
def _layer_norm(layer: LayerNormLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axes = tuple(range(x.ndim - len(layer.normalized_shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + layer.eps)
    if "weight" in params:
        y = y * params["weight"]
    if "bias" in params:
        y = y + params["bias"]
    return y


@RUNTIME.register("group_norm")
def _group_norm(layer: GroupNormLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = np.moveaxis(xs[0], _axis(layer.axis, xs[0], layer.name), 1)
    n, c = x.shape[:2]
    grouped = x.reshape(n, layer.num_groups, c // layer.num_groups, *x.shape[2:])
    axes = tuple(range(2, grouped.ndim))
    mean = grouped.mean(axis=axes, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=axes, keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + layer.eps)).reshape(x.shape)
    if "weight" in params:
        y = y * _along(params["weight"], 1, y.ndim)
    if "bias" in params:
        y = y + _along(params["bias"], 1, y.ndim)
    return np.moveaxis(y, 1, _axis(layer.axis, xs[0], layer.name))


@RUNTIME.register("normalization")
def _normalization(layer: NormalizationLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axis = _axis(layer.axis, x, layer.name)
    std = np.maximum(np.sqrt(params["variance"]), layer.eps)
    return (x - _along(params["mean"], axis, x.ndim)) / _along(std, axis, x.ndim)


@RUNTIME.register("embedding")
def _embedding(layer: EmbeddingLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = np.asarray(xs[0])
    if x.dtype.kind not in "iu":
        raise InvalidInputError(
            f"an embedding reads integer indices, received dtype {x.dtype}", layer=layer.name
        )
    if x.size and (x.min() < 0 or x.max() >= layer.num_embeddings):
        raise InvalidInputError(
            f"indices must lie in [0, {layer.num_embeddings}); received values from {x.min()} to {x.max()}",
            layer=layer.name,
        )
    return params["weight"][x]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _cell(
    kind: str, layer: RecurrentBase, p: Params, suffix: str, x_t: np.ndarray, state: tuple
) -> tuple:
    """One step of one direction of one stacked layer; returns the new state (h first)."""
    w_ih, w_hh = p[f"weight_ih{suffix}"], p[f"weight_hh{suffix}"]
    b_ih = p.get(f"bias_ih{suffix}", 0.0)
    b_hh = p.get(f"bias_hh{suffix}", 0.0)
    gi = x_t @ w_ih.T + b_ih
    gh = state[0] @ w_hh.T + b_hh
    if kind == "simple_rnn":
        pre = gi + gh
        return (np.tanh(pre) if layer.activation == "tanh" else np.maximum(pre, 0.0),)  # type: ignore[attr-defined]
    if kind == "lstm":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = _sigmoid(f) * state[1] + _sigmoid(i) * np.tanh(g)
        return (_sigmoid(o) * np.tanh(c), c)
    ir, iz, in_ = np.split(gi, 3, axis=-1)
    hr, hz, hn = np.split(gh, 3, axis=-1)
    r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
    n = np.tanh(in_ + r * hn)
    return ((1.0 - z) * n + z * state[0],)


def _direction(
    layer: RecurrentBase, p: Params, suffix: str, x: np.ndarray, reverse: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Run one direction over batch-first ``x``; return outputs in time order and final h."""
    n, steps = x.shape[:2]
    zeros = np.zeros((n, layer.hidden_size))
    state: tuple = (zeros, zeros) if layer.kind == "lstm" else (zeros,)
    outputs = [zeros] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        state = _cell(layer.kind, layer, p, suffix, x[:, t], state)
        outputs[t] = state[0]
    return np.stack(outputs, axis=1) if steps else np.zeros((n, 0, layer.hidden_size)), state[0]


def _recurrent(layer: RecurrentBase, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0] if layer.batch_first else np.swapaxes(xs[0], 0, 1)
    if x.ndim != 3:
        raise InvalidInputError(
            f"a {layer.kind} layer reads (batch, time, features); received rank {x.ndim}",
            layer=layer.name,
        )
    finals: list[np.ndarray] = []
    for k in range(layer.num_layers):
        outs, finals = [], []
        for suffix, reverse in (("", False), ("_reverse", True))[: layer.directions]:
            seq, final = _direction(layer, params, f"_l{k}{suffix}", x, reverse)
            outs.append(seq)
            finals.append(final)
        x = np.concatenate(outs, axis=-1)
    if not layer.return_sequences:
        return np.concatenate(finals, axis=-1)
    return x if layer.batch_first else np.swapaxes(x, 0, 1)


for _kind in ("simple_rnn", "lstm", "gru"):
    RUNTIME.register(_kind)(_recurrent)


@RUNTIME.register("add", "subtract", "multiply", "average", "maximum", "minimum")
def _merge(layer: MergeLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    if layer.kind == "subtract":
        return xs[0] - xs[1]
    ops = {
        "add": np.add,
        "multiply": np.multiply,
        "maximum": np.maximum,
        "minimum": np.minimum,
        "average": np.add,
    }
    y = xs[0]
    for other in xs[1:]:
        y = ops[layer.kind](y, other)
    return y / len(xs) if layer.kind == "average" else y


@RUNTIME.register("concatenate")
def _concatenate(layer: ConcatenateLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    if layer.axis == 0:
        raise UnsupportedLayerError(
            "concatenating along the batch axis is not a layer", layer=layer.name
        )
    return np.concatenate(xs, axis=layer.axis)


@RUNTIME.register("last_step")
def _last_step(layer: LastStepLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0][:, -1]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@RUNTIME.register("multi_head_attention")
def _attention(layer: Any, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    n, t, e = x.shape
    heads, d = layer.num_heads, layer.embed_dim // layer.num_heads
    qkv = x @ params["in_proj_weight"].T + params.get("in_proj_bias", 0.0)
    q, k, v = (
        part.reshape(n, t, heads, d).transpose(0, 2, 1, 3) for part in np.split(qkv, 3, axis=-1)
    )
    weights = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d))
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, e)
    return context @ params["out_proj_weight"].T + params.get("out_proj_bias", 0.0)
