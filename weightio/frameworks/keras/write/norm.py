"""Normalisation spec kinds -> Keras layers as data."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.frameworks.keras.write.base import (
    KERAS_FLOAT,
    KERAS_WRITE,
    KerasLayer,
    WriteContext,
    layer_array,
)
from weightio.frameworks.keras.write.serialized import (
    ONES,
    ZEROS,
    build_config,
    layer_config,
    none_of,
)
from weightio.spec.base import CHANNELS, LayerBase
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer

#: The initializers, regularizers and constraints of a normalisation's gamma and beta.
_GAMMA_BETA = {
    "beta_initializer": ZEROS, "gamma_initializer": ONES,
    **none_of("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"),
}


def keras_float_dtype(layer: LayerBase, ref: Any) -> str:
    """The Keras float dtype of a parameter; integer parameters are refused by layer."""
    if ref.dtype not in KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"{layer.kind} parameters are {ref.dtype}; Keras computes in float dtypes only",
            layer=layer.name,
        )
    return KERAS_FLOAT[ref.dtype]


def _weights(ctx: WriteContext, layer: LayerBase, names: tuple[str, ...]) -> list[np.ndarray]:
    return [layer_array(ctx, getattr(layer, n)) for n in names if getattr(layer, n) is not None]


def channels_last_axis(layer: Any, rank: int) -> int:
    """The Keras axis of canonical ``layer.axis`` on a channels-last feature map of ``rank``."""
    positive = layer.axis if layer.axis > 0 else layer.axis + rank
    if not 0 < positive < rank:
        raise UnsupportedLayerError(
            f"{layer.kind} axis {layer.axis} is out of range for a rank-{rank} feature map",
            layer=layer.name,
        )
    return -1 if positive == 1 else positive - 1


def feature_map_rank(layer: Any, ctx: WriteContext) -> int:
    """The rank of the feature map a per-channel layer reads (recorded, or from the spec)."""
    if getattr(layer, "input_rank", None) is not None:
        return layer.input_rank
    from weightio.layouts.flow import tensor_ranks

    spec = ctx.archive.spec
    index = next(i for i, l in enumerate(spec.layers) if l.name == layer.name)
    rank = tensor_ranks(spec).get(spec.layer_inputs(index)[0])
    if rank is None:
        raise UnsupportedLayerError(
            f"{layer.kind} on a feature map of unknown rank", layer=layer.name
        )
    return rank


@KERAS_WRITE.register("batch_norm")
def _batch_norm(layer: BatchNormLayer, ctx: WriteContext) -> list[KerasLayer]:
    """BatchNormalization(axis, epsilon, center, scale) with the moving statistics set.

    On a feature map (``ctx.layout == "channels"``) Keras holds the tensor channels-last, so the
    canonical channel axis 1 becomes ``axis=-1`` (a spatial axis ``k`` becomes ``k - 1``): the
    layer reads the channels-last tensor as is, no permute around it.
    """
    dtype = keras_float_dtype(layer, layer.running_mean)
    if ctx.layout == "channels":
        axis = channels_last_axis(layer, feature_map_rank(layer, ctx))
    else:
        axis = layer.axis
        rank = layer.input_rank or (2 if layer.axis in (1, -1) else None)
        if rank is None:
            raise UnsupportedLayerError(
                f"batch_norm on axis {layer.axis} of an input of unknown rank", layer=layer.name
            )
    config = layer_config(
        ctx.name_of(layer), dtype, axis=axis,
        momentum=0.99 if layer.momentum is None else 1.0 - layer.momentum,
        epsilon=layer.eps, center=layer.bias is not None, scale=layer.weight is not None,
        **_GAMMA_BETA, moving_mean_initializer=ZEROS, moving_variance_initializer=ONES,
        synchronized=False, renorm=False, renorm_clipping=None, renorm_momentum=0.99,
    )
    weights = _weights(ctx, layer, ("weight", "bias", "running_mean", "running_var"))
    ctx.dtype = dtype
    bn = KerasLayer("BatchNormalization", config, ctx.shape, weights, build=build_config(ctx.shape))
    bn.call_kwargs = {"mask": None}
    return [bn]


@KERAS_WRITE.register("layer_norm")
def _layer_norm(layer: LayerNormLayer, ctx: WriteContext) -> list[KerasLayer]:
    """LayerNormalization over the last ``len(normalized_shape)`` axes."""
    ref = layer.weight or layer.bias
    dtype = keras_float_dtype(layer, ref) if ref is not None else ctx.dtype
    k = len(layer.normalized_shape)
    config = layer_config(
        ctx.name_of(layer), dtype, axis=list(range(-k, 0)), epsilon=layer.eps,
        center=layer.bias is not None, scale=layer.weight is not None, rms_scaling=False, **_GAMMA_BETA,
    )
    ctx.dtype = dtype
    weights = _weights(ctx, layer, ("weight", "bias"))
    return [KerasLayer("LayerNormalization", config, ctx.shape, weights, build=build_config(ctx.shape))]


@KERAS_WRITE.register("group_norm")
def _group_norm(layer: GroupNormLayer, ctx: WriteContext) -> list[KerasLayer]:
    """GroupNormalization(groups, axis, epsilon, center, scale); on a feature map the canonical
    channel axis 1 becomes ``axis=-1`` of the channels-last tensor (as for batch_norm).
    """
    ref = layer.weight or layer.bias
    dtype = keras_float_dtype(layer, ref) if ref is not None else ctx.dtype
    axis = layer.axis
    if ctx.layout == "channels":
        axis = channels_last_axis(layer, feature_map_rank(layer, ctx))
    config = layer_config(
        ctx.name_of(layer), dtype, groups=layer.num_groups, axis=axis, epsilon=layer.eps,
        center=layer.bias is not None, scale=layer.weight is not None, **_GAMMA_BETA,
    )
    ctx.dtype = dtype
    weights = _weights(ctx, layer, ("weight", "bias"))
    return [KerasLayer("GroupNormalization", config, ctx.shape, weights, build=build_config(ctx.shape))]


@KERAS_WRITE.register("normalization")
def _normalization(layer: NormalizationLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Normalization(axis, mean=, variance=): the statistics travel in the layer's config.

    Keras floors the deviation at the global ``keras.config.epsilon()``, which no config holds:
    the archive's floor must be the one Keras will compute with (``ctx.settings``).
    """
    epsilon = ctx.settings.epsilon
    if float(epsilon) != layer.eps:
        raise UnsupportedLayerError(
            f"Keras Normalization floors the deviation at keras.config.epsilon() = "
            f"{epsilon}, the archive at {layer.eps}; set keras.config.set_epsilon({layer.eps})",
            layer=layer.name,
        )
    mean, variance = layer_array(ctx, layer.mean), layer_array(ctx, layer.variance)
    axis = layer.axis
    if ctx.layout == CHANNELS:  # canonical channel axis 1 -> Keras's channels-last axis
        axis = channels_last_axis(layer, feature_map_rank(layer, ctx))
    config = layer_config(
        ctx.name_of(layer), keras_float_dtype(layer, layer.mean), axis=[axis], invert=False,
        mean=mean.tolist(), variance=variance.tolist(),
    )
    return [KerasLayer("Normalization", config, ctx.shape, build=build_config(ctx.shape))]
