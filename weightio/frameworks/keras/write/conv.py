"""Spatial spec kinds -> Keras layers as data, channels-last."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from weightio.errors import UnsupportedLayerError
from weightio.frameworks.keras.read.conv import keras_transpose_cropping
from weightio.frameworks.keras.write.base import (
    INPUT,
    KERAS_FLOAT,
    KERAS_WRITE,
    KerasLayer,
    WriteContext,
    keras_activation_name,
    layer_array,
    same_shape_layer,
    standalone_activation,
)
from weightio.frameworks.keras.write.bridge import move_layout, permute_layer, spec_ranks, spec_tags
from weightio.frameworks.keras.write.ops import operation
from weightio.frameworks.keras.write.serialized import (
    GLOROT,
    ZEROS,
    Shape,
    build_config,
    layer_config,
    none_of,
)
from weightio.frameworks.keras.write.shapes import (
    flattened,
    padded,
    pooled_globally,
    transposed,
    upsampled,
    windowed,
)
from weightio.layouts.flow import CHANNELS, PLAIN
from weightio.layouts.transforms import (
    channels_first_axes,
    channels_last_axes,
    compose_permutation,
    conv_transpose_weight_to_keras,
    conv_weight_to_keras,
    depthwise_weight_to_keras,
    shape_channels_last,
)
from weightio.runtime.shapes import tensor_shapes
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

CHANNELS_LAST = "channels_last"

# -- helpers ----------------------------------------------------------------------------------


def _float_dtype(layer: LayerBase, ref: Any) -> str:
    if ref.dtype not in KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"weights are {ref.dtype}; Keras convolutions compute in a float dtype only",
            layer=layer.name,
        )
    return KERAS_FLOAT[ref.dtype]


def _activation(layer: Any, ctx: WriteContext, dtype: str) -> tuple[str, Any]:
    """The activation string for the layer's config, and (if none is exact) a function giving
    the standalone activation layer once the output shape is known; its name is taken now, so
    names come in the order the layers are written.
    """
    as_string = keras_activation_name(layer.activation)
    if as_string is not None:
        return as_string, None
    name = ctx.names.fresh(f"{ctx.name_of(layer)}_{layer.activation.name}")

    def follow(shape: Shape) -> list[KerasLayer]:
        return [standalone_activation(layer.activation, name=name, dtype=dtype, shape=shape, layer=layer.name)]

    return "linear", follow


def _pad_layer(cls: str, rank: int, name: str, dtype: str, pairs: list[tuple[int, int]], shape: Shape) -> KerasLayer:
    """``ZeroPadding*D(pairs)`` or ``Cropping*D(pairs)`` as Keras serializes them."""
    arg: Any = list(pairs[0]) if rank == 1 else [list(p) for p in pairs]
    if cls == "ZeroPadding":
        fields = {"padding": arg, "data_format": CHANNELS_LAST}
        out = padded(shape, pairs)
    else:
        fields = {"cropping": arg} if rank == 1 else {"cropping": arg, "data_format": CHANNELS_LAST}
        out = padded(shape, [(-b, -a) for b, a in pairs])
    return KerasLayer(f"{cls}{rank}D", layer_config(name, dtype, **fields), out, build=build_config(shape))


def _explicit_padding(
    layer: Any, ctx: WriteContext, pads: Any, dtype: str, shape: Shape, *, own_name: bool = False
) -> list[KerasLayer]:
    """ZeroPadding for positive pads, Cropping for negative ones (exact either way).

    ``own_name``: the first layer takes the spec layer's name (a ``zero_padding`` layer itself,
    not padding added before another layer).
    """
    pads = [tuple(p) for p in pads]
    grow = [(max(b, 0), max(a, 0)) for b, a in pads]
    crop = [(max(-b, 0), max(-a, 0)) for b, a in pads]
    built: list[KerasLayer] = []
    base = ctx.names.by_spec.get(layer.name, layer.name)
    for pairs, cls in ((grow, "ZeroPadding"), (crop, "Cropping")):
        if any(v for pair in pairs for v in pair):
            name = base if own_name and not built else ctx.names.fresh(f"{base}_{cls.lower()}")
            built.append(_pad_layer(cls, layer.rank, name, dtype, pairs, shape))
            shape = built[-1].output_shape
    return built


def _padding_arg(layer: Any, ctx: WriteContext, dtype: str) -> tuple[str, list[KerasLayer]]:
    if isinstance(layer.padding, str):
        return layer.padding, []
    if not any(v for pair in layer.padding for v in pair):
        return "valid", []
    return "valid", _explicit_padding(layer, ctx, layer.padding, dtype, ctx.shape)


def _window(window: Sequence[int], strides: Sequence[int], padding: str) -> dict[str, Any]:
    return {"pool_size": list(window), "padding": padding, "strides": list(strides), "data_format": CHANNELS_LAST}


def _conv_fields(
    layer: Any, strides: Sequence[int], padding: str, activation: str, kernel: str = "kernel"
) -> dict[str, Any]:
    """The fields every Keras convolution config shares (``kernel`` names its initializer)."""
    return {
        "kernel_size": list(layer.kernel_size), "strides": list(strides), "padding": padding,
        "data_format": CHANNELS_LAST, "dilation_rate": list(layer.dilation), "activation": activation,
        "use_bias": layer.use_bias, f"{kernel}_initializer": GLOROT, "bias_initializer": ZEROS,
        **none_of(f"{kernel}_regularizer", "bias_regularizer", "activity_regularizer",
                  f"{kernel}_constraint", "bias_constraint"),
    }


def _after(built: list[KerasLayer], ctx: WriteContext) -> Shape:
    """The shape the last of ``built`` outputs (the input's when nothing was built yet)."""
    return built[-1].output_shape if built else ctx.shape


# -- convolutions -----------------------------------------------------------------------------


@KERAS_WRITE.register("conv")
def _conv(layer: ConvLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``Conv*D`` (or ``DepthwiseConv*D`` when every input channel is its own group)."""
    dtype = _float_dtype(layer, layer.weight)
    strides, subsample_name = layer.strides, None
    if any(st > 1 for st in layer.strides) and any(d > 1 for d in layer.dilation):
        # Keras refuses strides > 1 with dilation > 1: convolve at stride 1 on the explicitly
        # padded input, then keep every s-th output (a 1-wide max pool is an exact subsample).
        layer = layer.model_copy(update={"padding": _explicit_same(layer, ctx)})
        strides = (1,) * layer.rank
        subsample_name = ctx.names.fresh(f"{ctx.name_of(layer)}_stride")
    padding, pre = _padding_arg(layer, ctx, dtype)
    act, follow = _activation(layer, ctx, dtype)
    weight = layer_array(ctx, layer.weight)
    shape = _after(pre, ctx)
    out = windowed(shape, layer.kernel_size, strides, layer.dilation, padding, layer.out_channels)
    if layer.groups == layer.in_channels > 1 and layer.rank <= 2:  # every channel its own group
        cls, weights = f"DepthwiseConv{layer.rank}D", [depthwise_weight_to_keras(weight, layer.in_channels)]
        fields = {"depth_multiplier": layer.out_channels // layer.in_channels,
                  **_conv_fields(layer, strides, padding, act, "depthwise")}
    else:
        cls, weights = f"Conv{layer.rank}D", [conv_weight_to_keras(weight)]
        fields = {"filters": layer.out_channels, **_conv_fields(layer, strides, padding, act, "kernel"),
                  "groups": layer.groups}
    if layer.bias is not None:
        weights.append(layer_array(ctx, layer.bias))
    built = [*pre, KerasLayer(cls, layer_config(ctx.name_of(layer), dtype, **fields), out, weights,
                              build=build_config(shape))]
    if subsample_name is not None:
        ones = (1,) * layer.rank
        sub = windowed(out, ones, layer.strides, ones, "valid", None)
        config = layer_config(subsample_name, dtype, **_window(ones, layer.strides, "valid"))
        built.append(KerasLayer(f"MaxPooling{layer.rank}D", config, sub))
    ctx.dtype = dtype
    return built + (follow(built[-1].output_shape) if follow else [])


def _explicit_same(layer: ConvLayer, ctx: WriteContext) -> Any:
    if layer.padding != "same":
        return layer.padding
    from weightio.layouts.transforms import same_padding

    shapes = tensor_shapes(ctx.archive)
    spec = ctx.archive.spec
    index = [l.name for l in spec.layers].index(layer.name)
    if shapes is None:
        raise UnsupportedLayerError(
            "Keras cannot combine strides and dilation, and rewriting it needs a fixed input "
            "size", layer=layer.name,
        )
    size = shapes[spec.layer_inputs(index)[0]][1:]
    return tuple(
        same_padding(n, k, s, d)
        for n, k, s, d in zip(size, layer.kernel_size, layer.strides, layer.dilation)
    )


@KERAS_WRITE.register("separable_conv")
def _separable(layer: SeparableConvLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``SeparableConv*D``: depthwise ``[*k, in, m]``, pointwise ``[*1, in*m, out]``, bias."""
    dtype = _float_dtype(layer, layer.depthwise_weight)
    padding, pre = _padding_arg(layer, ctx, dtype)
    act, follow = _activation(layer, ctx, dtype)
    shape = _after(pre, ctx)
    fields = _conv_fields(layer, layer.strides, padding, act, "depthwise")
    fields.update(pointwise_initializer=GLOROT, pointwise_regularizer=None, pointwise_constraint=None)
    config = layer_config(
        ctx.name_of(layer), dtype, depth_multiplier=layer.depth_multiplier, filters=layer.out_channels, **fields
    )
    weights = [
        depthwise_weight_to_keras(layer_array(ctx, layer.depthwise_weight), layer.in_channels),
        conv_weight_to_keras(layer_array(ctx, layer.pointwise_weight)),
    ]
    if layer.bias is not None:
        weights.append(layer_array(ctx, layer.bias))
    out = windowed(shape, layer.kernel_size, layer.strides, layer.dilation, padding, layer.out_channels)
    conv = KerasLayer(f"SeparableConv{layer.rank}D", config, out, weights, build=build_config(shape))
    ctx.dtype = dtype
    return [*pre, conv, *(follow(out) if follow else [])]


def _transpose_padding(layer: ConvTransposeLayer) -> tuple[str, Any, list[tuple[int, int]]]:
    """Keras (padding, output_padding) reproducing ``cropping``, plus any crop still needed."""
    dims = list(zip(layer.kernel_size, layer.strides, layer.dilation, layer.cropping))
    for mode in ("valid", "same"):
        if all(keras_transpose_cropping(k, s, d, mode, None) == tuple(c) for k, s, d, c in dims):
            return mode, None, []
        ops = []
        for k, s, d, c in dims:
            found = [o for o in range(s) if keras_transpose_cropping(k, s, d, mode, o) == tuple(c)]
            ops.append(found[0] if found else None)
        if all(o is not None for o in ops):
            return mode, tuple(ops), []
    rest = [tuple(c) for c in layer.cropping]
    return "valid", (0,) * layer.rank, rest  # full output, then crop


@KERAS_WRITE.register("conv_transpose")
def _conv_transpose(layer: ConvTransposeLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``Conv*DTranspose``; cropping via padding/output_padding, else a Cropping layer."""
    if layer.groups != 1:
        raise UnsupportedLayerError(
            f"a grouped transposed convolution (groups={layer.groups}) has no Keras layer",
            layer=layer.name,
        )
    dtype = _float_dtype(layer, layer.weight)
    padding, output_padding, crop = _transpose_padding(layer)
    if any(b < 0 or a < 0 for b, a in crop):
        raise UnsupportedLayerError(
            f"cropping {list(layer.cropping)} extends the output beyond what Keras's "
            "output_padding can express", layer=layer.name,
        )
    act, follow = _activation(layer, ctx, dtype)
    fields = _conv_fields(layer, layer.strides, padding, act, "kernel")
    fields = {"filters": layer.out_channels, **fields,
              "output_padding": None if output_padding is None else list(output_padding)}
    weights = [conv_transpose_weight_to_keras(layer_array(ctx, layer.weight))]
    if layer.bias is not None:
        weights.append(layer_array(ctx, layer.bias))
    out = transposed(ctx.shape, layer.kernel_size, layer.strides, layer.dilation, padding,
                     output_padding, layer.out_channels)
    conv = KerasLayer(f"Conv{layer.rank}DTranspose", layer_config(ctx.name_of(layer), dtype, **fields),
                      out, weights, build=build_config(ctx.shape))
    ctx.dtype = dtype
    cropping = _explicit_padding(layer, ctx, [(-b, -a) for b, a in crop], dtype, out) if crop else []
    built = [conv, *cropping]
    return built + (follow(built[-1].output_shape) if follow else [])


# -- pooling, padding, resizing ---------------------------------------------------------------


@KERAS_WRITE.register("pool")
def _pool(layer: PoolLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``MaxPooling*D`` / ``AveragePooling*D``; explicit padding only where Keras is exact."""
    cls = "MaxPooling" if layer.op == "max" else "AveragePooling"
    pre: list[KerasLayer] = []
    padding = layer.padding
    if not isinstance(padding, str):
        if not any(v for pair in padding for v in pair):
            padding = "valid"
        elif _is_keras_same(layer, ctx.shape) and not (layer.op == "avg" and layer.count_include_pad):
            padding = "same"  # Keras's own uneven padding: max ignores it, average excludes it
        elif layer.op == "avg" and layer.count_include_pad:
            pre, padding = _explicit_padding(layer, ctx, layer.padding, ctx.dtype, ctx.shape), "valid"
        elif layer.op == "max":
            pre, padding = [_minus_inf_padding(layer, ctx)], "valid"
        else:
            raise UnsupportedLayerError(
                f"explicit padding {list(layer.padding)} for average pooling that excludes the "
                "padding has no exact Keras equivalent (Keras offers only 'valid' and 'same')",
                layer=layer.name,
            )
    ones = (1,) * layer.rank
    out = windowed(_after(pre, ctx), layer.pool_size, layer.strides, ones, padding, None)
    config = layer_config(ctx.name_of(layer), ctx.dtype, **_window(layer.pool_size, layer.strides, padding))
    return [*pre, KerasLayer(f"{cls}{layer.rank}D", config, out)]


def _is_keras_same(layer: PoolLayer, shape: Shape) -> bool:
    """Whether the explicit pads are the ones Keras's ``"same"`` gives this channels-last input."""
    from weightio.layouts.transforms import same_padding

    sizes = shape[:-1]
    if len(sizes) != layer.rank or any(n is None for n in sizes):
        return False
    return all(tuple(pads) == same_padding(n, k, s) for n, k, s, pads in
               zip(sizes, layer.pool_size, layer.strides, layer.padding))


def _minus_inf_padding(layer: PoolLayer, ctx: WriteContext) -> KerasLayer:
    """``keras.ops.pad(x, pads, constant_values=-inf)`` on the channels-last map: the padding
    torch's max pooling uses (a ``ZeroPadding`` would let a zero win over negative values). A
    built-in operation, so the ``.keras`` file loads with ``safe_mode=True``.
    """
    if any(b < 0 or a < 0 for b, a in layer.padding):
        raise UnsupportedLayerError(
            f"negative padding {list(layer.padding)} for max pooling", layer=layer.name
        )
    pairs = [[int(b), int(a)] for b, a in layer.padding]
    name = ctx.names.fresh(f"{ctx.names.by_spec.get(layer.name, layer.name)}_pad")
    return operation(
        "Pad", name, padded(ctx.shape, [tuple(p) for p in pairs]), ctx.dtype,
        [INPUT, float("-inf")], pad_width=[[0, 0], *pairs, [0, 0]], mode="constant",
    )


@KERAS_WRITE.register("global_pool")
def _global_pool(layer: GlobalPoolLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``Global{Max,Average}Pooling*D(keepdims)``."""
    cls = "GlobalMaxPooling" if layer.op == "max" else "GlobalAveragePooling"
    config = layer_config(ctx.name_of(layer), ctx.dtype, data_format=CHANNELS_LAST, keepdims=layer.keepdims)
    out = pooled_globally(ctx.shape, layer.rank, layer.keepdims)
    return [KerasLayer(f"{cls}{layer.rank}D", config, out)]


@KERAS_WRITE.register("zero_padding")
def _zero_padding(layer: ZeroPaddingLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``ZeroPadding*D`` (and ``Cropping*D`` for negative pads)."""
    built = _explicit_padding(layer, ctx, layer.padding, ctx.dtype, ctx.shape, own_name=True)
    return built or [same_shape_layer("Identity", ctx.name_of(layer), ctx.dtype, ctx.shape)]


@KERAS_WRITE.register("upsampling")
def _upsampling(layer: UpSamplingLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``UpSampling*D`` with nearest-neighbour interpolation."""
    if layer.rank == 1:
        fields: dict[str, Any] = {"size": layer.size[0]}
    elif layer.rank == 2:
        fields = {"size": list(layer.size), "data_format": CHANNELS_LAST, "interpolation": "nearest"}
    else:
        fields = {"size": list(layer.size), "data_format": CHANNELS_LAST}
    config = layer_config(ctx.name_of(layer), ctx.dtype, **fields)
    out = upsampled(ctx.shape, layer.size)
    return [KerasLayer(f"UpSampling{layer.rank}D", config, out, build=build_config(ctx.shape))]


# -- flatten, reshape, permute ----------------------------------------------------------------


def _rank_in(ctx: WriteContext, layer: LayerBase) -> int | None:
    spec = ctx.archive.spec
    index = [l.name for l in spec.layers].index(layer.name)
    return spec_ranks(spec).get(spec.layer_inputs(index)[0])


@KERAS_WRITE.register("flatten")
def _flatten(layer: FlattenLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Keras flattens its own form; a permute first when the recorded order differs."""
    have = ctx.layout
    keras_order = "channels_last" if have == CHANNELS else "channels_first"
    pre: list[KerasLayer] = []
    ndim = _rank_in(ctx, layer)
    if layer.order != keras_order and (ndim is None or ndim > 2):
        want = CHANNELS if layer.order == "channels_last" else PLAIN
        pre = move_layout(ctx, have, want, ndim, layer.name, ctx.shape)
    shape = _after(pre, ctx)
    config = layer_config(ctx.name_of(layer), ctx.dtype, data_format=CHANNELS_LAST)
    return [*pre, KerasLayer("Flatten", config, flattened(shape), build=build_config(shape))]


@KERAS_WRITE.register("reshape")
def _reshape(layer: ReshapeLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``Reshape`` of the form the source reshaped (permutes around it where forms differ)."""
    want = CHANNELS if layer.input_order == "channels_last" else PLAIN
    pre = move_layout(ctx, ctx.layout, want, _rank_in(ctx, layer), layer.name, ctx.shape)
    target = tuple(layer.target_shape)
    if layer.output_order == "channels_last":
        target = shape_channels_last(target)
    config = layer_config(ctx.name_of(layer), ctx.dtype, target_shape=list(target))
    return [*pre, KerasLayer("Reshape", config, target)]


@KERAS_WRITE.register("permute")
def _permute_layer(layer: PermuteLayer, ctx: WriteContext) -> list[KerasLayer]:
    """One ``Permute`` composing the layout moves with the permutation (or Identity)."""
    wanted = spec_tags(ctx.archive.spec).get(layer.name, PLAIN)
    ndim = len(layer.dims) + 1
    identity = tuple(range(ndim))
    into = channels_first_axes(ndim) if ctx.layout == CHANNELS else identity
    out = channels_last_axes(ndim) if wanted == CHANNELS else identity
    total = compose_permutation(compose_permutation(into, (0, *layer.dims)), out)
    # A permute that only moves a tensor between its two forms (a sequence read as a feature
    # map) is the identity in Keras. Written as ``Permute`` of the identity it reads back as
    # that same move (an ``Identity`` would read back as a new tensor needing a new move, one
    # more layer per round trip)
    return [permute_layer(ctx.name_of(layer), ctx.dtype, total[1:], ctx.shape)]
