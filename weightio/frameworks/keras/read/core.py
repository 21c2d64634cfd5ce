"""Keras core layers -> spec layers: Dense, activations, dropout, Identity, Rescaling, and
ConvNeXt's LayerScale and StochasticDepth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import (
    NotExact,
    activation_from_keras,
    short,
)
from weightio.frameworks.keras.read.base import (
    KERAS_READ,
    KerasLayerEntry,
    config_number,
    expect_weights,
    layer_fields,
    refuse_quantized,
)
from weightio.frameworks.keras.read.graph import (
    policy_name,
)
from weightio.layouts.transforms import DENSE_KERNEL_TRANSPOSED, dense_weight_from_keras
from weightio.spec.activations import ActivationFn
from weightio.spec.base import LayerBase
from weightio.spec.core import (
    ActivationLayer,
    AffineLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    RescalingLayer,
)
from weightio.spec.dtypes import numpy_dtype


@KERAS_READ.register("Dense", produces=("dense",))
def _dense(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Keras kernel ``[in, out]`` -> canonical ``weight [out, in]``; bias as is."""
    refuse_quantized(entry)
    use_bias = bool(entry.config.get("use_bias", True))
    expect_weights(entry, 2 if use_bias else 1)
    kernel = entry.weights[0]
    if kernel.ndim != 2:
        raise NotExact(f"Dense kernel has shape {list(kernel.shape)}, expected [in, out]")
    activation = activation_from_keras(entry.config.get("activation"))
    weight = tensors.add(entry.name, "weight", dense_weight_from_keras(kernel))
    bias = tensors.add(entry.name, "bias", entry.weights[1]) if use_bias else None
    entry.transforms.append(DENSE_KERNEL_TRANSPOSED)
    return DenseLayer(
        **layer_fields(entry),
        units=int(kernel.shape[1]),
        in_features=int(kernel.shape[0]),
        use_bias=use_bias,
        activation=activation,
        weight=weight,
        bias=bias,
    )


def _activation_layer(entry: KerasLayerEntry, fn: ActivationFn) -> ActivationLayer:
    expect_weights(entry, 0)
    return ActivationLayer(**layer_fields(entry), activation=fn)


@KERAS_READ.register("Activation", produces=("activation",))
def _activation(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Activation("relu")``: the named function with its defaults."""
    return _activation_layer(entry, activation_from_keras(entry.config.get("activation")))


@KERAS_READ.register("ReLU", produces=("activation",))
def _relu(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ReLU(max_value, negative_slope, threshold)``: exact only as relu, relu6 or leaky_relu."""
    max_value = config_number(entry.config, "max_value", None)
    slope = config_number(entry.config, "negative_slope", 0.0) or 0.0
    threshold = config_number(entry.config, "threshold", 0.0) or 0.0
    if threshold == 0.0 and slope == 0.0 and max_value is None:
        fn = ActivationFn(name="relu")
    elif threshold == 0.0 and slope == 0.0 and max_value == 6.0:
        fn = ActivationFn(name="relu6")
    elif threshold == 0.0 and slope > 0.0 and max_value is None:
        fn = ActivationFn(name="leaky_relu", negative_slope=slope)
    else:
        raise NotExact(
            f"ReLU(max_value={max_value}, negative_slope={slope}, threshold={threshold}) is "
            "neither relu, relu6 nor leaky_relu"
        )
    return _activation_layer(entry, fn)


@KERAS_READ.register("LeakyReLU", produces=("activation",))
def _leaky_relu(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """The layer's default slope is 0.3 (the function's is 0.2); Keras 2 configs call it alpha."""
    key = "negative_slope" if "negative_slope" in entry.config else "alpha"
    slope = config_number(entry.config, key, 0.3)
    return _activation_layer(entry, ActivationFn(name="leaky_relu", negative_slope=slope))


@KERAS_READ.register("ELU", produces=("activation",))
def _elu(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ELU(alpha)``, default 1.0."""
    alpha = config_number(entry.config, "alpha", 1.0)
    return _activation_layer(entry, ActivationFn(name="elu", alpha=alpha))


@KERAS_READ.register("Softmax", produces=("activation",))
def _softmax(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Softmax(axis)``; the axis counts the batch axis in both Keras and the spec."""
    axis = entry.config.get("axis", -1)
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise NotExact(f"Softmax over axis {short(axis)}: the spec takes one axis")
    return _activation_layer(entry, ActivationFn(name="softmax", axis=axis))


@KERAS_READ.register(
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    produces=("dropout",),
)
def _dropout(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Every dropout variant is the identity at inference; the rate is kept for the record."""
    expect_weights(entry, 0)
    rate = config_number(entry.config, "rate", None)
    if rate is None:
        raise NotExact(f"{entry.class_name} config has no rate")
    return DropoutLayer(**layer_fields(entry), rate=rate)


@KERAS_READ.register(
    "Identity", "GaussianNoise", "ActivityRegularization", "StochasticDepth", produces=("identity",)
)
def _identity(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Identity``, and the layers that are the identity at inference (``GaussianNoise``,
    ``ActivityRegularization``, ConvNeXt's ``StochasticDepth``, which drops whole residual
    branches in training only): the input passes through.
    """
    expect_weights(entry, 0)
    return IdentityLayer(**layer_fields(entry))


@KERAS_READ.register("LayerScale", produces=("affine",))
def _layer_scale(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """ConvNeXt's ``LayerScale``: ``x * gamma``, one learned factor per feature of the last
    axis (the channels of a channels-last feature map). Read as ``affine`` with a zero offset:
    ``x * gamma + 0`` is ``x * gamma`` exactly.
    """
    refuse_quantized(entry)
    expect_weights(entry, 1)
    gamma = entry.weights[0]
    if gamma.ndim != 1 or gamma.dtype.kind != "f":
        raise NotExact(f"LayerScale gamma of shape {list(gamma.shape)} ({gamma.dtype}) is not one "
                       "float per feature")
    dim = entry.config.get("projection_dim")
    if dim is not None and dim != gamma.shape[0]:
        raise NotExact(f"LayerScale projection_dim={short(dim)} but gamma holds {gamma.shape[0]}")
    return AffineLayer(
        **layer_fields(entry),
        features=int(gamma.shape[0]),
        scale=tensors.add(entry.name, "scale", gamma),
        offset=tensors.add(entry.name, "offset", np.zeros_like(gamma)),
    )


#: Keras dtype policies -> the compute dtype a ``Rescaling`` casts its constants to.
_RESCALING_DTYPES = {
    "float16": "F16", "mixed_float16": "F16", "bfloat16": "BF16", "mixed_bfloat16": "BF16",
    "float32": "F32", "float64": "F64",
}


def _config_vector(value: Any, what: str) -> tuple[tuple[float, ...], int]:
    """A config number, list or serialized ``__numpy__`` array as its values and their axis.

    Keras broadcasts the array against the input, so it has a per-channel meaning only when at
    most one of its axes is longer than 1; that axis is returned counted from the end (``-1``
    for a number or a plain list). Anything else is not exact.
    """
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        value = (value.get("config") or {}).get("value")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NotExact(f"Rescaling {what}={short(value)} is not numeric") from None
    long = [i for i, d in enumerate(array.shape) if d != 1]
    if len(long) > 1:
        raise NotExact(f"Rescaling {what} of shape {list(array.shape)} varies along several axes")
    if not np.all(np.isfinite(array)):
        raise NotExact(f"Rescaling {what} holds a non-finite value")
    axis = long[0] - array.ndim if long else -1
    return tuple(float(v) for v in array.reshape(-1)) or (0.0,), axis


@KERAS_READ.register("Rescaling", produces=("rescaling", "affine"))
def _rescaling(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Rescaling(scale, offset)``: one value, or one per channel of the last Keras axis.

    On a channels-last feature map the last Keras axis is the channels, canonical axis 1; on
    plain data it is the features, axis -1. Keras casts both constants to the compute dtype
    before use, and the spec records that dtype so every framework does the same. (Keras under
    ``image_data_format="channels_first"`` lays a vector ``scale`` along axis 1 instead; weightio
    reads models saved with the default channels-last format.)

    A per-feature ``Rescaling`` of plain data is a feature scaler: it reads as ``affine``, the
    kind scikit-learn's scalers read into, with the cast values as its tensors, so such a model
    goes on to scikit-learn as a scaler.
    """
    expect_weights(entry, 0)
    _, policy = policy_name(entry.config.get("dtype"))
    dtype = _RESCALING_DTYPES.get(policy or "float32")
    if dtype is None:
        raise NotExact(f"Rescaling computes in {policy!r}; weightio maps float16/32/64 and bf16")
    scale, scale_axis = _config_vector(entry.config.get("scale"), "scale")
    offset, offset_axis = _config_vector(entry.config.get("offset", 0.0), "offset")
    axes = {axis for values, axis in ((scale, scale_axis), (offset, offset_axis)) if len(values) > 1}
    if len(axes) > 1:
        raise NotExact("Rescaling scale and offset vary along different axes")
    axis = axes.pop() if axes else -1
    if bool(entry.input_tags) and entry.input_tags[0] == "channels":
        if axis != -1:
            raise NotExact("a Rescaling varying along a spatial axis of a feature map")
        axis = 1  # Keras's last axis of a channels-last feature map: its channels
    elif axis == -1 and len(scale) > 1 and dtype != "BF16":
        numpy = numpy_dtype(dtype)
        features = len(scale)
        return AffineLayer(
            **layer_fields(entry),
            features=features,
            scale=tensors.add(entry.name, "scale", np.asarray(scale).astype(numpy)),
            offset=tensors.add(entry.name, "offset", np.broadcast_to(offset, features).astype(numpy)),
        )
    return RescalingLayer(**layer_fields(entry), scale=scale, offset=offset, axis=axis, dtype=dtype)
