"""Keras spatial layers -> spec layers, without importing Keras (config + arrays only)."""

from __future__ import annotations

from typing import Any

from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import NotExact, activation_from_keras, short
from weightio.frameworks.keras.read.base import (
    KERAS_READ,
    KerasLayerEntry,
    expect_weights,
    layer_fields,
)
from weightio.layouts.flow import CHANNELS
from weightio.layouts.transforms import (
    CONV_KERNEL_TRANSPOSED,
    DEPTHWISE_KERNEL_RESHAPED,
    TRANSPOSE_KERNEL_TRANSPOSED,
    compose_permutation,
    conv_transpose_weight_from_keras,
    conv_weight_from_keras,
    depthwise_weight_from_keras,
    shape_channels_first,
)
from weightio.spec.base import LayerBase
from weightio.spec.conv import (
    ConvLayer,
    ConvTransposeLayer,
    FlattenLayer,
    GlobalPoolLayer,
    PermuteLayer,
    PoolLayer,
    ReshapeLayer,
    SeparableConvLayer,
    UpSamplingLayer,
    ZeroPaddingLayer,
)

_R = {"1D": 1, "2D": 2, "3D": 3}

CONV_CLASSES = {f"Conv{r}": n for r, n in _R.items()}
DEPTHWISE_CLASSES = {"DepthwiseConv1D": 1, "DepthwiseConv2D": 2}
SEPARABLE_CLASSES = {"SeparableConv1D": 1, "SeparableConv2D": 2}
TRANSPOSE_CLASSES = {f"Conv{r}Transpose": n for r, n in _R.items()}
POOL_CLASSES = {
    **{f"MaxPooling{r}": ("max", n) for r, n in _R.items()},
    **{f"AveragePooling{r}": ("avg", n) for r, n in _R.items()},
}
GLOBAL_CLASSES = {
    **{f"GlobalMaxPooling{r}": ("max", n) for r, n in _R.items()},
    **{f"GlobalAveragePooling{r}": ("avg", n) for r, n in _R.items()},
}
PADDING_CLASSES = {f"ZeroPadding{r}": n for r, n in _R.items()}
UPSAMPLING_CLASSES = {f"UpSampling{r}": n for r, n in _R.items()}

# -- helpers ----------------------------------------------------------------------------------


def _tuple(value: Any, rank: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * rank
    if isinstance(value, (list, tuple)) and len(value) == rank and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise NotExact(f"{what}={short(value)} is not {rank} integer(s)")


def _channels_last_only(entry: KerasLayerEntry) -> None:
    fmt = entry.config.get("data_format")
    if fmt not in (None, "channels_last"):
        raise NotExact(
            f"data_format={fmt!r}: weightio reads channels_last Keras layers (the Keras default)"
        )


def _padding(entry: KerasLayerEntry, rank: int, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> Any:
    padding = str(entry.config.get("padding", "valid")).lower()
    if padding in ("valid", "same"):
        return padding
    if padding == "causal" and rank == 1:
        return (((kernel[0] - 1) * dilation[0], 0),)
    raise NotExact(f"padding={padding!r} is not valid, same or causal")


def _spatial(entry: KerasLayerEntry, rank: int, kernel_key: str = "kernel_size") -> dict[str, Any]:
    config = entry.config
    kernel = _tuple(config.get(kernel_key), rank, kernel_key)
    dilation = _tuple(config.get("dilation_rate", 1), rank, "dilation_rate")
    return {
        "rank": rank,
        "kernel_size": kernel,
        "strides": _tuple(config.get("strides", 1), rank, "strides"),
        "dilation": dilation,
        "padding": _padding(entry, rank, kernel, dilation),
    }


def _bias(entry: KerasLayerEntry, tensors: TensorCollector, index: int) -> Any:
    return tensors.add(entry.name, "bias", entry.weights[index]) if entry.config.get("use_bias", True) else None


# -- convolutions -----------------------------------------------------------------------------


@KERAS_READ.register(*CONV_CLASSES, produces=("conv",))
def _conv(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Conv{1,2,3}D``: kernel ``[*k, in/groups, out]`` -> ``[out, in/groups, *k]``."""
    _channels_last_only(entry)
    rank = CONV_CLASSES[entry.class_name]
    use_bias = bool(entry.config.get("use_bias", True))
    expect_weights(entry, 2 if use_bias else 1)
    kernel = entry.weights[0]
    groups = int(entry.config.get("groups", 1) or 1)
    entry.transforms.append(CONV_KERNEL_TRANSPOSED)
    return ConvLayer(
        **layer_fields(entry), **_spatial(entry, rank),
        in_channels=int(kernel.shape[-2]) * groups,
        out_channels=int(kernel.shape[-1]),
        groups=groups,
        use_bias=use_bias,
        activation=activation_from_keras(entry.config.get("activation")),
        weight=tensors.add(entry.name, "weight", conv_weight_from_keras(kernel)),
        bias=_bias(entry, tensors, 1),
    )


@KERAS_READ.register(*DEPTHWISE_CLASSES, produces=("conv",))
def _depthwise(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``DepthwiseConv*D``: a ``conv`` with ``groups = in_channels``."""
    _channels_last_only(entry)
    rank = DEPTHWISE_CLASSES[entry.class_name]
    use_bias = bool(entry.config.get("use_bias", True))
    expect_weights(entry, 2 if use_bias else 1)
    kernel = entry.weights[0]  # [*k, in, m]
    cin, mult = int(kernel.shape[-2]), int(kernel.shape[-1])
    entry.transforms.append(DEPTHWISE_KERNEL_RESHAPED)
    return ConvLayer(
        **layer_fields(entry), **_spatial(entry, rank),
        in_channels=cin, out_channels=cin * mult, groups=cin, use_bias=use_bias,
        activation=activation_from_keras(entry.config.get("activation")),
        weight=tensors.add(entry.name, "weight", depthwise_weight_from_keras(kernel)),
        bias=_bias(entry, tensors, 1),
    )


@KERAS_READ.register(*SEPARABLE_CLASSES, produces=("separable_conv",))
def _separable(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``SeparableConv*D``: depthwise ``[*k, in, m]`` and pointwise ``[*1, in*m, out]``."""
    _channels_last_only(entry)
    rank = SEPARABLE_CLASSES[entry.class_name]
    use_bias = bool(entry.config.get("use_bias", True))
    expect_weights(entry, 3 if use_bias else 2)
    depthwise, pointwise = entry.weights[0], entry.weights[1]
    cin, mult = int(depthwise.shape[-2]), int(depthwise.shape[-1])
    entry.transforms.extend([DEPTHWISE_KERNEL_RESHAPED, CONV_KERNEL_TRANSPOSED])
    return SeparableConvLayer(
        **layer_fields(entry), **_spatial(entry, rank),
        in_channels=cin, out_channels=int(pointwise.shape[-1]), depth_multiplier=mult,
        use_bias=use_bias,
        activation=activation_from_keras(entry.config.get("activation")),
        depthwise_weight=tensors.add(entry.name, "depthwise_weight", depthwise_weight_from_keras(depthwise)),
        pointwise_weight=tensors.add(entry.name, "pointwise_weight", conv_weight_from_keras(pointwise)),
        bias=_bias(entry, tensors, 2),
    )


def keras_transpose_cropping(
    kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None
) -> tuple[int, int]:
    """Keras ``Conv*DTranspose`` padding -> canonical ``(crop_begin, crop_end)``.

    Keras's own rule (``_convert_conv_transpose_padding_args_from_keras_to_jax``): the input,
    dilated by the stride, is padded ``(left, right)``; the full transposed output pads
    ``k' - 1`` on both sides, so the crops are ``k' - 1 - left`` and ``k' - 1 - right``.
    """
    k = (kernel - 1) * dilation + 1
    if padding == "valid":
        op = max(k, stride) - k if output_padding is None else output_padding
        left, right = k - 1, k - 1 + op
    else:
        pad_len = stride + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
        left = min(pad_len // 2 + pad_len % 2, k - 1)
        right = pad_len - left
    return k - 1 - left, k - 1 - right


@KERAS_READ.register(*TRANSPOSE_CLASSES, produces=("conv_transpose",))
def _conv_transpose(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Conv*DTranspose``: kernel ``[*k, out, in]`` -> ``[in, out, *k]``; padding -> cropping."""
    _channels_last_only(entry)
    rank = TRANSPOSE_CLASSES[entry.class_name]
    use_bias = bool(entry.config.get("use_bias", True))
    expect_weights(entry, 2 if use_bias else 1)
    spatial = _spatial(entry, rank)
    padding = spatial.pop("padding")
    if padding not in ("valid", "same"):
        raise NotExact(f"padding={short(padding)} for a transposed convolution")
    op = entry.config.get("output_padding")
    ops = [None] * rank if op is None else list(_tuple(op, rank, "output_padding"))
    cropping = tuple(
        keras_transpose_cropping(k, s, d, padding, o)
        for k, s, d, o in zip(spatial["kernel_size"], spatial["strides"], spatial["dilation"], ops)
    )
    kernel = entry.weights[0]
    entry.transforms.append(TRANSPOSE_KERNEL_TRANSPOSED)
    return ConvTransposeLayer(
        **layer_fields(entry), **spatial, cropping=cropping,
        in_channels=int(kernel.shape[-1]), out_channels=int(kernel.shape[-2]),
        use_bias=use_bias,
        activation=activation_from_keras(entry.config.get("activation")),
        weight=tensors.add(entry.name, "weight", conv_transpose_weight_from_keras(kernel)),
        bias=_bias(entry, tensors, 1),
    )


# -- pooling, padding, upsampling -------------------------------------------------------------


@KERAS_READ.register(*POOL_CLASSES, produces=("pool",))
def _pool(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``MaxPooling*D`` / ``AveragePooling*D``; ``strides=None`` means the pool size."""
    _channels_last_only(entry)
    expect_weights(entry, 0)
    op, rank = POOL_CLASSES[entry.class_name]
    size = _tuple(entry.config.get("pool_size"), rank, "pool_size")
    strides = entry.config.get("strides")
    padding = str(entry.config.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise NotExact(f"padding={padding!r}")
    return PoolLayer(
        **layer_fields(entry), rank=rank, op=op, pool_size=size,
        strides=size if strides is None else _tuple(strides, rank, "strides"),
        padding=padding, count_include_pad=False,
    )


@KERAS_READ.register(*GLOBAL_CLASSES, produces=("global_pool",))
def _global_pool(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Global{Max,Average}Pooling*D(keepdims)``."""
    _channels_last_only(entry)
    expect_weights(entry, 0)
    op, rank = GLOBAL_CLASSES[entry.class_name]
    return GlobalPoolLayer(**layer_fields(entry), rank=rank, op=op, keepdims=bool(entry.config.get("keepdims", False)))


def _pairs(value: Any, rank: int) -> tuple[tuple[int, int], ...]:
    """Keras padding: ``p``, ``(p_1, …)`` symmetric per axis, or ``((b, a), …)``."""
    if rank == 1:
        if isinstance(value, int):
            return ((value, value),)
        return (tuple(_tuple(value, 2, "padding")),)  # type: ignore[return-value]
    if isinstance(value, int):
        return ((value, value),) * rank
    if isinstance(value, (list, tuple)) and len(value) == rank:
        out = []
        for item in value:
            out.append((item, item) if isinstance(item, int) else tuple(_tuple(item, 2, "padding")))
        return tuple(out)  # type: ignore[return-value]
    raise NotExact(f"padding={short(value)}")


@KERAS_READ.register(*PADDING_CLASSES, produces=("zero_padding",))
def _zero_padding(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ZeroPadding*D``."""
    _channels_last_only(entry)
    expect_weights(entry, 0)
    rank = PADDING_CLASSES[entry.class_name]
    return ZeroPaddingLayer(**layer_fields(entry), rank=rank, padding=_pairs(entry.config.get("padding", 1), rank))


@KERAS_READ.register("Cropping1D", "Cropping2D", "Cropping3D", produces=("zero_padding",))
def _cropping(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Cropping*D``: a zero padding with negative pads."""
    _channels_last_only(entry)
    expect_weights(entry, 0)
    rank = int(entry.class_name[-2])
    pairs = _pairs(entry.config.get("cropping", 1), rank)
    return ZeroPaddingLayer(**layer_fields(entry), rank=rank, padding=tuple((-b, -a) for b, a in pairs))


@KERAS_READ.register("Pad", produces=("pool",))
def _minus_inf_pad(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``keras.ops.pad(x, pads, constant_values=-inf)`` on a channels-last map, as weightio
    writes before a max pooling with explicit padding: a 1-wide max pooling with that padding
    (the maximum of one element is the element; the padding is −∞ in both).
    """
    expect_weights(entry, 0)
    node = entry.raw.get("inbound_nodes") or [{}]
    args = node[0].get("args") if isinstance(node[0], dict) else None
    kwargs = (node[0].get("kwargs") or {}) if isinstance(node[0], dict) else {}
    value = args[1] if isinstance(args, (list, tuple)) and len(args) == 2 else kwargs.get("constant_values")
    width = entry.config.get("pad_width")
    if entry.config.get("mode", "constant") != "constant" or value != float("-inf"):
        raise NotExact(f"pad with mode={entry.config.get('mode')!r}, value={short(value)}: only "
                       "constant -inf padding (before a max pooling) is mapped")
    if not (isinstance(width, (list, tuple)) and 3 <= len(width) <= 5
            and all(isinstance(p, (list, tuple)) and len(p) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
                    for p in width)
            and list(width[0]) == [0, 0] and list(width[-1]) == [0, 0]):
        raise NotExact(f"pad_width={short(width)}: only spatial axes of a channels-last map are mapped")
    pairs = tuple((int(b), int(a)) for b, a in width[1:-1])
    ones = (1,) * len(pairs)
    return PoolLayer(**layer_fields(entry), rank=len(pairs), op="max", pool_size=ones, strides=ones,
                     padding=pairs)


@KERAS_READ.register(*UPSAMPLING_CLASSES, produces=("upsampling",))
def _upsampling(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``UpSampling*D``; only nearest-neighbour interpolation is exact to map."""
    _channels_last_only(entry)
    expect_weights(entry, 0)
    rank = UPSAMPLING_CLASSES[entry.class_name]
    interpolation = entry.config.get("interpolation", "nearest")
    if interpolation != "nearest":
        raise NotExact(f"interpolation={interpolation!r}: only 'nearest' is mapped")
    key = "length" if rank == 1 and "length" in entry.config else "size"
    return UpSamplingLayer(**layer_fields(entry), rank=rank, size=_tuple(entry.config.get(key, 2), rank, key))


# -- flatten, reshape, permute ----------------------------------------------------------------


def _input_is_map(entry: KerasLayerEntry) -> bool:
    return bool(entry.input_tags) and entry.input_tags[0] == CHANNELS


@KERAS_READ.register("Flatten", produces=("flatten",))
def _flatten(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Keras flattens channels-last: recorded, so the next Dense keeps its rows as trained."""
    _channels_last_only(entry)
    expect_weights(entry, 0)
    return FlattenLayer(**layer_fields(entry), order="channels_last" if _input_is_map(entry) else "channels_first")


def reshape_from_keras(entry: KerasLayerEntry, target: tuple[int, ...]) -> ReshapeLayer:
    """A reshape of Keras's own (channels-last) form to Keras shape ``target`` (no batch)."""
    out_map = entry.output_tag == CHANNELS and len(target) >= 2
    return ReshapeLayer(
        **layer_fields(entry),
        target_shape=shape_channels_first(tuple(target)) if out_map else tuple(target),
        input_order="channels_last" if _input_is_map(entry) else "channels_first",
        output_order="channels_last" if out_map else "channels_first",
    )


@KERAS_READ.register("Reshape", produces=("reshape",))
def _reshape(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Reshape(target_shape)`` of Keras's own (channels-last) form of each tensor."""
    expect_weights(entry, 0)
    target = entry.config.get("target_shape")
    if not isinstance(target, (list, tuple)) or not all(isinstance(d, int) for d in target):
        raise NotExact(f"target_shape={short(target)}")
    return reshape_from_keras(entry, tuple(target))


def permute_from_keras(entry: KerasLayerEntry, dims: tuple[int, ...]) -> PermuteLayer:
    """A permute ``dims`` (non-batch axes, from 1) of Keras forms, composed with the layout
    moves on either side.
    """
    if sorted(dims) != list(range(1, len(dims) + 1)):
        raise NotExact(f"dims={short(list(dims))}")
    ndim = len(dims) + 1
    keras_perm = (0, *dims)
    # canonical x -> Keras form (if a map) -> Keras permute -> canonical form (if a map)
    into = (0, *range(2, ndim), 1) if _input_is_map(entry) else tuple(range(ndim))
    back = (0, ndim - 1, *range(1, ndim - 1)) if entry.output_tag == CHANNELS else tuple(range(ndim))
    total = compose_permutation(compose_permutation(into, keras_perm), back)
    return PermuteLayer(**layer_fields(entry), dims=total[1:])


@KERAS_READ.register("Permute", produces=("permute",))
def _permute(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Permute(dims)`` on Keras forms, composed with the layout moves on either side."""
    expect_weights(entry, 0)
    dims = entry.config.get("dims")
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) for d in dims):
        raise NotExact(f"dims={short(dims)}")
    return permute_from_keras(entry, tuple(dims))
