"""Numpy reference of the graph operations: merges of several tensors, concatenation, last step."""

from __future__ import annotations

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.runtime.base import RUNTIME
from weightio.runtime.norm import Params
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer


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
