"""Core spec kinds -> Keras layers as data: dense, activation, dropout, identity, affine,
rescaling, binary_proba.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.frameworks.keras.write.base import (
    KERAS_FLOAT,
    KERAS_WRITE,
    KerasLayer,
    WriteContext,
    keras_activation_name,
    keras_numpy_dtype,
    layer_array,
    same_shape_layer,
    standalone_activation,
)
from weightio.frameworks.keras.write.serialized import (
    GLOROT,
    ZEROS,
    build_config,
    layer_config,
    none_of,
    numpy_value,
)
from weightio.layouts.transforms import dense_weight_to_keras
from weightio.spec.base import CHANNELS
from weightio.spec.core import (
    ActivationLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    OpaqueLayer,
    RescalingLayer,
)

_DENSE_UNSET = none_of("kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint")


def dense_layer(
    name: str, dtype: str, units: int, shape: Any, weights: list[np.ndarray], *,
    activation: str = "linear", use_bias: bool = True, trainable: bool = True,
) -> KerasLayer:
    """A ``Dense`` reading the last axis of ``shape``, with its ``[kernel(, bias)]``."""
    config = layer_config(
        name, dtype, trainable=trainable, units=units, activation=activation, use_bias=use_bias,
        kernel_initializer=GLOROT, bias_initializer=ZEROS, **_DENSE_UNSET, quantization_config=None,
    )
    return KerasLayer("Dense", config, (*shape[:-1], units), weights, build=build_config(shape))


@KERAS_WRITE.register("dense")
def _dense(layer: DenseLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Dense in the weights' own dtype, then a standalone activation if no string is exact."""
    if layer.weight.dtype not in KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"dense weights are {layer.weight.dtype}; Keras Dense computes in a float dtype only",
            layer=layer.name,
        )
    dtype = KERAS_FLOAT[layer.weight.dtype]
    as_string = keras_activation_name(layer.activation)
    out = (*ctx.shape[:-1], layer.units)
    follow = None
    if as_string is None:
        follow = standalone_activation(
            layer.activation,
            name=ctx.names.fresh(f"{ctx.name_of(layer)}_{layer.activation.name}"),
            dtype=dtype, shape=out, layer=layer.name,
        )
    weights = [dense_weight_to_keras(layer_array(ctx, layer.weight))]  # a view: copied when written
    if layer.bias is not None:
        weights.append(layer_array(ctx, layer.bias))
    dense = dense_layer(
        ctx.name_of(layer), dtype, layer.units, ctx.shape, weights,
        activation=as_string or "linear", use_bias=layer.use_bias,
    )
    ctx.dtype = dtype
    return [dense] if follow is None else [dense, follow]


@KERAS_WRITE.register("activation")
def _activation(layer: ActivationLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``Activation("name")`` when defaults match, else the exact dedicated layer."""
    return [standalone_activation(
        layer.activation, name=ctx.name_of(layer), dtype=ctx.dtype, shape=ctx.shape, layer=layer.name
    )]


@KERAS_WRITE.register("dropout")
def _dropout(layer: DropoutLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Dropout(rate): inert at inference, kept so the structure round-trips."""
    dropout = same_shape_layer(
        "Dropout", ctx.name_of(layer), ctx.dtype, ctx.shape, rate=layer.rate, seed=None, noise_shape=None
    )
    dropout.call_kwargs = {"training": False}
    return [dropout]


@KERAS_WRITE.register("identity")
def _identity(layer: IdentityLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Identity."""
    return [same_shape_layer("Identity", ctx.name_of(layer), ctx.dtype, ctx.shape)]


@KERAS_WRITE.register("affine")
def _affine(layer: Any, ctx: WriteContext) -> list[KerasLayer]:
    """``Rescaling(scale=[...], offset=[...])``: Keras computes ``x * scale + offset`` itself.

    The arrays travel in the layer's config (Keras's ``__numpy__`` form), not as weights.
    """
    scale = np.array(layer_array(ctx, layer.scale))
    offset = np.array(layer_array(ctx, layer.offset))
    if layer.scale.dtype not in KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"affine parameters are {layer.scale.dtype}; Keras Rescaling computes in floats only",
            layer=layer.name,
        )
    if ctx.settings.image_data_format == "channels_first":
        raise UnsupportedLayerError(
            "Keras Rescaling reshapes per-feature scales for images when image_data_format is "
            "'channels_first'; set it to 'channels_last' to build this model",
            layer=layer.name,
        )
    dtype = KERAS_FLOAT[layer.scale.dtype]
    ctx.dtype = dtype
    config = layer_config(ctx.name_of(layer), dtype, scale=numpy_value(scale), offset=numpy_value(offset))
    return [KerasLayer("Rescaling", config, ctx.shape, build=build_config(ctx.shape))]


@KERAS_WRITE.register("rescaling")
def _rescaling(layer: RescalingLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``Rescaling(scale, offset)``: numbers, or per-channel values shaped to broadcast in Keras.

    On a channels-last feature map the canonical channel axis is Keras's last, so a plain list
    is exact; on plain data the values are shaped ``[C, 1, …]`` to lie along the same axis as in
    the spec. Keras casts them to the layer's compute dtype, which is the spec's ``dtype``.
    """
    rank = len(ctx.shape) + 1
    axis = layer.axis if layer.axis > 0 else layer.axis + rank
    if layer.size > 1 and not 0 < axis < rank:
        raise UnsupportedLayerError(
            f"rescaling axis {layer.axis} is out of range for a rank-{rank} input", layer=layer.name
        )
    if layer.size > 1 and ctx.settings.image_data_format == "channels_first":
        raise UnsupportedLayerError(
            "Keras Rescaling reshapes per-channel scales for images when image_data_format is "
            "'channels_first'; set it to 'channels_last' to build this model",
            layer=layer.name,
        )
    keras_last = (ctx.layout == CHANNELS and axis == 1) or axis == rank - 1
    trailing = () if keras_last else (1,) * (rank - 1 - axis)

    def laid(values: tuple[float, ...]) -> Any:  # as Keras serializes them: numbers and lists
        if len(values) == 1:
            return float(values[0])
        return np.asarray(values, dtype=np.float64).reshape(len(values), *trailing).tolist()

    dtype = KERAS_FLOAT[layer.dtype]
    ctx.dtype = dtype
    config = layer_config(ctx.name_of(layer), dtype, scale=laid(layer.scale), offset=laid(layer.offset))
    return [KerasLayer("Rescaling", config, ctx.shape, build=build_config(ctx.shape))]


@KERAS_WRITE.register("binary_proba")
def _binary_proba(layer: Any, ctx: WriteContext) -> list[KerasLayer]:
    """``[1 - p, p]`` as a frozen ``Dense(2)``: kernel ``[[-1, 1]]``, bias ``[1, 0]``.

    With one input each output is one exact product (by +-1) plus the bias: exactly ``1 - p``
    and ``p``. Keras has no standard layer for it, and a ``Lambda`` would not load safely.
    """
    # -1, 1 and 0 are exact in every float dtype: stored in the layer's own.
    numpy = keras_numpy_dtype(ctx.dtype)
    weights = [np.array([[-1.0, 1.0]], numpy), np.array([1.0, 0.0], numpy)]
    return [dense_layer(ctx.name_of(layer), ctx.dtype, 2, ctx.shape, weights, trainable=False)]


@KERAS_WRITE.register("opaque")
def _opaque(layer: OpaqueLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Refuse, naming the layer, its source class and why it was kept opaque."""
    why = f" ({layer.reason})" if layer.reason else ""
    raise UnsupportedLayerError(
        f"{layer.source_class or 'this layer'} was kept as 'opaque'{why}; weightio cannot build "
        "it in Keras. Replace or remove that layer in the source model",
        layer=layer.name,
    )
