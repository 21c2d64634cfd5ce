"""Numpy reference of the normalisation kinds: batch, layer and group norm, Keras Normalization."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from weightio.runtime.base import RUNTIME, along_axis, positive_axis
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer

Params = Mapping[str, np.ndarray]


@RUNTIME.register("batch_norm")
def _batch_norm(layer: BatchNormLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axis = positive_axis(layer.axis, x, layer.name)
    scale = 1.0 / np.sqrt(params["running_var"] + layer.eps)
    y = (x - along_axis(params["running_mean"], axis, x.ndim)) * along_axis(scale, axis, x.ndim)
    if "weight" in params:
        y = y * along_axis(params["weight"], axis, x.ndim)
    if "bias" in params:
        y = y + along_axis(params["bias"], axis, x.ndim)
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
    x = np.moveaxis(xs[0], positive_axis(layer.axis, xs[0], layer.name), 1)
    n, c = x.shape[:2]
    grouped = x.reshape(n, layer.num_groups, c // layer.num_groups, *x.shape[2:])
    axes = tuple(range(2, grouped.ndim))
    mean = grouped.mean(axis=axes, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=axes, keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + layer.eps)).reshape(x.shape)
    if "weight" in params:
        y = y * along_axis(params["weight"], 1, y.ndim)
    if "bias" in params:
        y = y + along_axis(params["bias"], 1, y.ndim)
    return np.moveaxis(y, 1, positive_axis(layer.axis, xs[0], layer.name))


@RUNTIME.register("normalization")
def _normalization(layer: NormalizationLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axis = positive_axis(layer.axis, x, layer.name)
    std = np.maximum(np.sqrt(params["variance"]), layer.eps)
    return (x - along_axis(params["mean"], axis, x.ndim)) / along_axis(std, axis, x.ndim)
