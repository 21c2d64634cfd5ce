"""Numpy reference of the tensor operations: reductions, slices, arithmetic with a stored
constant, stored tensors used directly, dtype casts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from weightio.errors import InvalidInputError
from weightio.runtime.base import RUNTIME, positive_axis
from weightio.spec.dtypes import numpy_dtype
from weightio.spec.ops import ArithmeticLayer, CastLayer, ParameterLayer, ReduceLayer, SliceLayer

Params = Mapping[str, np.ndarray]

_REDUCE = {"mean": np.mean, "max": np.max, "min": np.min, "sum": np.sum}
_ARITHMETIC = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.true_divide,
    "maximum": np.maximum, "minimum": np.minimum, "power": np.power,
}


@RUNTIME.register("reduce")
def _reduce(layer: ReduceLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axes = tuple(positive_axis(axis, x, layer.name) for axis in layer.axes)
    return _REDUCE[layer.op](x, axis=axes, keepdims=layer.keepdims)


@RUNTIME.register("slice")
def _slice(layer: SliceLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    index = [slice(None)] * x.ndim
    index[positive_axis(layer.axis, x, layer.name)] = slice(layer.start, layer.stop, layer.step)
    return x[tuple(index)]


@RUNTIME.register("arithmetic")
def _arithmetic(layer: ArithmeticLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x, constant = xs[0], params["constant"]
    if constant.ndim > x.ndim - 1:
        raise InvalidInputError(
            f"the constant of shape {list(constant.shape)} has more axes than the input "
            f"{tuple(x.shape)} without its batch axis",
            layer=layer.name,
        )
    try:
        np.broadcast_shapes(x.shape[1:], constant.shape)
    except ValueError:
        raise InvalidInputError(
            f"the constant of shape {list(constant.shape)} does not broadcast against the "
            f"input {tuple(x.shape)}",
            layer=layer.name,
        ) from None
    fn = _ARITHMETIC[layer.op]
    return fn(constant, x) if layer.constant_first else fn(x, constant)


@RUNTIME.register("parameter")
def _parameter(layer: ParameterLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    value = params["value"]
    return np.broadcast_to(value, (xs[0].shape[0], *value.shape)).copy()


@RUNTIME.register("cast")
def _cast(layer: CastLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x, target = xs[0], numpy_dtype(layer.dtype)
    if target.kind in "iub" and x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("a NaN or infinite value cannot be cast to an integer",
                                    layer=layer.name)
        x = np.trunc(x)
        if target.kind in "iu":
            info = np.iinfo(target)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise InvalidInputError(
                    f"values outside {layer.dtype}'s range [{info.min}, {info.max}]",
                    layer=layer.name,
                )
    if target.kind == "f" or target.name == "bfloat16" or "float8" in target.name:
        # Rounded through the target, then back to the runtime's float64: the same values the
        # frameworks go on with.
        return x.astype(target).astype(np.float64)
    return x.astype(target)
