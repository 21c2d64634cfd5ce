"""Keras normalisation layers -> spec layers: batch, layer and group norm, Normalization."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import NotExact, short
from weightio.frameworks.keras.read.base import (
    KERAS_READ,
    KerasLayerEntry,
    expect_weights,
    layer_fields,
)
from weightio.spec.base import LayerBase
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer

#: Keras's default ``backend.epsilon()``, the floor of Normalization's standard deviation.
KERAS_EPSILON = 1e-7


def _input_rank(entry: KerasLayerEntry) -> int | None:
    """The layer's input rank (batch included) from its ``build_config``, when recorded."""
    build = entry.raw.get("build_config") if entry.raw else None
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], (list, tuple)):
        return len(shape)
    return None


def single_axis(value: Any, what: str) -> int:
    """One axis from a config value (an int, or a list holding one)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotExact(f"{what} over axis {short(value)}: weightio maps one axis")
    return value


def scale_center_flags(entry: KerasLayerEntry) -> tuple[bool, bool]:
    """A normalisation layer's ``scale`` and ``center`` flags (Keras defaults: both on)."""
    return bool(entry.config.get("scale", True)), bool(entry.config.get("center", True))


def canonical_axis(axis: int, rank: int | None) -> int:
    """The canonical (channels-first) axis of Keras ``axis`` on a channels-last feature map.

    The last axis (channels) becomes 1; spatial axis ``k`` becomes ``k + 1``.
    """
    if axis == -1:
        return 1
    if rank is None:
        raise NotExact(f"axis {axis} of a channels-last feature map of unknown rank")
    positive = axis if axis >= 0 else axis + rank
    if not 0 < positive < rank:
        raise NotExact(f"axis {axis} is the batch axis or out of range for a rank-{rank} input")
    return 1 if positive == rank - 1 else positive + 1


# -- normalisation ------------------------------------------------------------------------------


@KERAS_READ.register("BatchNormalization", produces=("batch_norm",))
def _batch_norm(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var; eps as is."""
    config = entry.config
    if config.get("renorm"):
        raise NotExact("BatchNormalization(renorm=True) changes the inference statistics")
    scale, center = scale_center_flags(entry)
    expect_weights(entry, 2 + scale + center)
    weights = list(entry.weights)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    mean, var = weights
    momentum = config.get("momentum", 0.99)
    axis = single_axis(config.get("axis", -1), "BatchNormalization")
    rank = _input_rank(entry)
    if entry.input_tags and entry.input_tags[0] == "channels":
        axis = canonical_axis(axis, rank)
    return BatchNormLayer(
        **layer_fields(entry),
        num_features=int(mean.shape[0]),
        axis=axis,
        input_rank=rank,
        eps=float(config.get("epsilon", 1e-3)),
        momentum=None if momentum is None else 1.0 - float(momentum),
        weight=None if gamma is None else tensors.add(entry.name, "weight", gamma),
        bias=None if beta is None else tensors.add(entry.name, "bias", beta),
        running_mean=tensors.add(entry.name, "running_mean", mean),
        running_var=tensors.add(entry.name, "running_var", var),
    )


@KERAS_READ.register("LayerNormalization", produces=("layer_norm",))
def _layer_norm(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Exact when the normalised axes are the last ones; ``rms_scaling`` is another function."""
    config = entry.config
    if config.get("rms_scaling"):
        raise NotExact("LayerNormalization(rms_scaling=True) is RMS normalisation, not layer norm")
    scale, center = scale_center_flags(entry)
    expect_weights(entry, scale + center)
    axes = config.get("axis", -1)
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
    rank = _input_rank(entry)
    negative = sorted(a - rank if a >= 0 and rank else a for a in axes)
    if any(a >= 0 for a in negative) or negative != list(range(-len(negative), 0)):
        raise NotExact(
            f"LayerNormalization over axes {axes} (not the last axes) has no exact torch form"
        )
    weights = list(entry.weights)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    present = gamma if gamma is not None else beta
    if present is not None:
        shape = tuple(present.shape)
    else:  # no affine parameters: the normalised shape comes from the recorded input shape
        build = (entry.raw.get("build_config") or {}).get("input_shape") or []
        shape = tuple(build[len(build) - len(negative) :])
        if not build or any(d is None for d in shape):
            raise NotExact("LayerNormalization without scale or center and unknown input shape")
    if len(shape) != len(negative):
        raise NotExact(f"LayerNormalization weights {list(shape)} do not match axes {axes}")
    return LayerNormLayer(
        **layer_fields(entry),
        normalized_shape=tuple(int(d) for d in shape),
        eps=float(config.get("epsilon", 1e-3)),
        weight=None if gamma is None else tensors.add(entry.name, "weight", gamma),
        bias=None if beta is None else tensors.add(entry.name, "bias", beta),
    )


@KERAS_READ.register("GroupNormalization", produces=("group_norm",))
def _group_norm(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """groups/axis/epsilon/gamma/beta -> num_groups/axis/eps/weight/bias."""
    config = entry.config
    scale, center = scale_center_flags(entry)
    expect_weights(entry, scale + center)
    if not entry.weights:
        raise NotExact("GroupNormalization without scale or center: its channel count is unknown")
    weights = list(entry.weights)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    channels = int((gamma if gamma is not None else beta).shape[0])
    axis = single_axis(config.get("axis", -1), "GroupNormalization")
    rank = _input_rank(entry)
    if entry.input_tags and entry.input_tags[0] == "channels":
        axis = canonical_axis(axis, rank)
    return GroupNormLayer(
        **layer_fields(entry),
        num_groups=int(config.get("groups", 32)),
        num_channels=channels,
        axis=axis,
        input_rank=rank,
        eps=float(config.get("epsilon", 1e-3)),
        weight=None if gamma is None else tensors.add(entry.name, "weight", gamma),
        bias=None if beta is None else tensors.add(entry.name, "bias", beta),
    )


@KERAS_READ.register("Normalization", produces=("normalization",))
def _normalization(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Adapted (weights mean, variance, count) or given in the config (mean=, variance=)."""
    config = entry.config
    if config.get("invert"):
        raise NotExact("Normalization(invert=True) de-normalises; weightio maps the forward form")
    axis = single_axis(config.get("axis", -1), "Normalization")
    if entry.weights:
        expect_weights(entry, 3)
        mean, variance = entry.weights[0], entry.weights[1]
    elif config.get("mean") is not None and config.get("variance") is not None:
        mean = np.asarray(config["mean"], dtype=np.float32)
        variance = np.asarray(config["variance"], dtype=np.float32)
    else:
        raise NotExact("Normalization was never adapted and has no mean/variance")
    rank = _input_rank(entry)
    if entry.input_tags and entry.input_tags[0] == "channels":
        axis = canonical_axis(axis, rank)  # the channels of a channels-last map: axis 1
    mean, variance = np.ravel(mean), np.ravel(variance)
    if mean.shape != variance.shape:
        raise NotExact(
            f"Normalization mean {list(mean.shape)} and variance {list(variance.shape)} differ"
        )
    return NormalizationLayer(
        **layer_fields(entry),
        num_features=int(mean.shape[0]),
        axis=axis,
        input_rank=rank,
        eps=KERAS_EPSILON,
        mean=tensors.add(entry.name, "mean", np.ascontiguousarray(mean)),
        variance=tensors.add(entry.name, "variance", np.ascontiguousarray(variance)),
    )
