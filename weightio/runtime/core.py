"""Numpy reference of the core kinds: dense, activation, dropout, identity, affine, rescaling,
binary_proba.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from weightio.errors import InvalidInputError, UnsupportedLayerError
from weightio.runtime.activations import apply_activation
from weightio.runtime.base import RUNTIME, along_axis, positive_axis
from weightio.spec.base import LayerBase
from weightio.spec.core import (
    ActivationLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    OpaqueLayer,
    RescalingLayer,
)
from weightio.spec.dtypes import numpy_dtype


@RUNTIME.register("dense")
def _dense(layer: DenseLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    y = xs[0] @ params["weight"].T
    if "bias" in params:
        y = y + params["bias"]
    return apply_activation(layer.activation, y)


@RUNTIME.register("activation")
def _activation(
    layer: ActivationLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    return apply_activation(layer.activation, xs[0])


@RUNTIME.register("dropout", "identity")
def _identity(
    layer: DropoutLayer | IdentityLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    return xs[0]


@RUNTIME.register("affine")
def _affine(layer: LayerBase, params: Mapping[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    return xs[0] * params["scale"] + params["offset"]


@RUNTIME.register("rescaling")
def _rescaling(
    layer: RescalingLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    """``x * scale + offset``, the two cast to the compute dtype first (as Keras does)."""
    x = xs[0]
    dtype = numpy_dtype(layer.dtype)
    axis = positive_axis(layer.axis, x, layer.name) if layer.size > 1 else x.ndim - 1

    def laid(values: tuple[float, ...]) -> np.ndarray:
        vector = np.asarray(values, dtype=np.float64).astype(dtype).astype(np.float64)
        return vector if len(values) == 1 else along_axis(vector, axis, x.ndim)

    if layer.size > 1 and x.shape[axis] != layer.size:
        raise InvalidInputError(
            f"rescaling has {layer.size} values for axis {layer.axis}, the input has "
            f"{x.shape[axis]} there (shape {tuple(x.shape)})",
            layer=layer.name,
        )
    return x * laid(layer.scale) + laid(layer.offset)


@RUNTIME.register("binary_proba")
def _binary_proba(
    layer: LayerBase, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    p = xs[0]
    if p.shape[-1] != 1:
        raise InvalidInputError(
            f"binary_proba layer {layer.name!r} needs one probability column, got shape "
            f"{tuple(p.shape)}"
        )
    return np.concatenate([1.0 - p, p], axis=-1)


@RUNTIME.register("opaque")
def _opaque(layer: OpaqueLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    why = f" ({layer.reason})" if layer.reason else ""
    raise UnsupportedLayerError(
        f"weightio does not know how to compute {layer.source_class or 'this layer'} "
        f"(kept as 'opaque'{why}); the archive can be inspected and diffed but not run",
        layer=layer.name,
    )
