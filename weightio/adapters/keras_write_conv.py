"""Spatial spec kinds -> Keras layers, channels-last, and the layout bridge around every layer.

Keras holds feature maps channels-last (``[N, *S, C]``), the spec channels-first. ``to_keras``
asks ``write_layer`` to build each layer: it moves the flowing tensor into the form the layer
needs (an exact ``Permute`` only where a feature map meets a layer that reads plain data, or the
reverse), calls the kind's writer, and leaves the result in the form ``layout_flow`` assigns to
it. A flatten whose order differs from Keras's is folded into the next Dense beforehand
(``prepare``). Registered into ``KERAS_WRITE``; Keras is imported by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.adapters.keras_read_conv import keras_transpose_cropping
from weightio.adapters.keras_write import (
    _KERAS_FLOAT,
    KERAS_WRITE,
    WriteContext,
    keras_activation_name,
    standalone_activation,
)
from weightio.archive import Archive
from weightio.errors import UnsupportedLayerError
from weightio.layout_flow import (
    CHANNELS,
    ELEMENTWISE,
    NEEDS_CHANNELS,
    PER_CHANNEL,
    PLAIN,
    refold_flatten,
    tensor_layouts,
    tensor_ranks,
    tensor_shapes,
)
from weightio.layouts import (
    channels_first_axes,
    channels_last_axes,
    compose_permutation,
    conv_transpose_weight_to_keras,
    conv_weight_to_keras,
    depthwise_weight_to_keras,
    shape_channels_last,
)
from weightio.spec import (
    ConvLayer,
    ConvTransposeLayer,
    FlattenLayer,
    GlobalPoolLayer,
    InputSpec,
    LayerBase,
    ModelSpec,
    PermuteLayer,
    PoolLayer,
    ReshapeLayer,
    SeparableConvLayer,
    UpSamplingLayer,
    ZeroPaddingLayer,
)

# -- preparing the archive and the inputs -----------------------------------------------------


def prepare(archive: Archive) -> Archive:
    """Fold flatten orders into the following Dense so Keras's own Flatten is exact."""
    return refold_flatten(  # type: ignore[return-value]
        archive, lambda layer, tag: "channels_last" if tag == CHANNELS else "channels_first"
    )


def keras_input_shape(spec: ModelSpec, inp: InputSpec) -> tuple:
    """The Keras input shape: channels-last for a feature-map input."""
    if tensor_layouts(spec)[inp.name] == CHANNELS and len(inp.shape) >= 2:
        return shape_channels_last(tuple(inp.shape))
    return tuple(inp.shape)


# -- the bridge -------------------------------------------------------------------------------


def _needs(layer: LayerBase) -> str | None:
    """The form a layer's writer needs its input in; None when it takes either."""
    if layer.kind in NEEDS_CHANNELS:
        return CHANNELS
    if layer.kind in ("flatten", "reshape", "permute"):
        return None
    axis = getattr(getattr(layer, "activation", None), "axis", None)
    if (layer.kind in ELEMENTWISE and axis is None) or layer.kind in PER_CHANNEL:
        return None  # per-channel writers read ``ctx.layout`` and place their axis
    return PLAIN


def _natural(layer: LayerBase, tag_in: str, wanted: str) -> str:
    """The form a writer leaves its output in."""
    if layer.kind in NEEDS_CHANNELS and layer.kind != "global_pool":
        return CHANNELS
    if isinstance(layer, GlobalPoolLayer):
        return CHANNELS if layer.keepdims else PLAIN
    if isinstance(layer, ReshapeLayer):
        return CHANNELS if layer.output_order == "channels_last" else PLAIN
    if isinstance(layer, PermuteLayer):
        return wanted
    if layer.kind in ELEMENTWISE or layer.kind in PER_CHANNEL:
        return tag_in
    return PLAIN


def _permute(ctx: WriteContext, axes: tuple[int, ...], base: str) -> Any:
    name = ctx.names.fresh(f"{base}_permute")
    return ctx.keras.layers.Permute(axes[1:], name=name, dtype=ctx.dtype)


def _move(ctx: WriteContext, have: str, want: str, ndim: int | None, base: str) -> list[Any]:
    if have == want:
        return []
    if ndim is None or ndim < 3:
        if ndim is not None:
            return []  # a vector is the same in both forms
        raise UnsupportedLayerError(
            "cannot tell the rank of the tensor to move between channels-last and "
            "channels-first", layer=base,
        )
    axes = channels_last_axes(ndim) if want == CHANNELS else channels_first_axes(ndim)
    return [_permute(ctx, axes, base)]


def write_layer(layer: LayerBase, ctx: WriteContext, source: str) -> list[Any]:
    """The Keras layers computing ``layer``, with exact permutes where forms differ."""
    spec = ctx.archive.spec
    tags = _tags(spec)
    ranks = _ranks(spec)
    have = tags.get(source, PLAIN)
    need = _needs(layer)
    built: list[Any] = []
    if need is not None and need != have:
        built += _move(ctx, have, need, ranks.get(source), layer.name)
        have = need
    ctx.layout = have  # type: ignore[attr-defined]
    built += KERAS_WRITE.lookup(layer.kind, layer=layer.name)(layer, ctx)
    wanted = tags.get(layer.name, PLAIN)
    natural = _natural(layer, have, wanted)
    built += _move(ctx, natural, wanted, ranks.get(layer.name), layer.name)
    return built


_CACHE: dict[int, tuple[ModelSpec, dict[str, str], dict[str, int]]] = {}


def _analysis(spec: ModelSpec) -> tuple[dict[str, str], dict[str, int]]:
    cached = _CACHE.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = (spec, tensor_layouts(spec), tensor_ranks(spec))
        _CACHE.clear()
        _CACHE[id(spec)] = cached
    return cached[1], cached[2]


def _tags(spec: ModelSpec) -> dict[str, str]:
    return _analysis(spec)[0]


def _ranks(spec: ModelSpec) -> dict[str, int]:
    return _analysis(spec)[1]


# -- helpers ----------------------------------------------------------------------------------


def _float_dtype(layer: LayerBase, ref: Any) -> str:
    if ref.dtype not in _KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"weights are {ref.dtype}; Keras convolutions compute in a float dtype only",
            layer=layer.name,
        )
    return _KERAS_FLOAT[ref.dtype]


def _activation(layer: Any, ctx: WriteContext, dtype: str) -> tuple[str, list[Any]]:
    as_string = keras_activation_name(layer.activation)
    if as_string is not None:
        return as_string, []
    follow = standalone_activation(
        layer.activation,
        name=ctx.names.fresh(f"{ctx.names.by_spec[layer.name]}_{layer.activation.name}"),
        dtype=dtype, ctx=ctx, layer=layer.name,
    )
    return "linear", [follow]


def _explicit_padding(layer: Any, ctx: WriteContext, pads: Any, dtype: str) -> list[Any]:
    """ZeroPadding for positive pads, Cropping for negative ones (exact either way)."""
    rank = layer.rank
    pads = [tuple(p) for p in pads]
    grow = [(max(b, 0), max(a, 0)) for b, a in pads]
    crop = [(max(-b, 0), max(-a, 0)) for b, a in pads]
    layers = ctx.keras.layers
    built = []
    base = ctx.names.by_spec.get(layer.name, layer.name)
    for pairs, cls in ((grow, "ZeroPadding"), (crop, "Cropping")):
        if any(v for pair in pairs for v in pair):
            arg = pairs[0] if rank == 1 else tuple(pairs)
            built.append(
                getattr(layers, f"{cls}{rank}D")(arg, name=ctx.names.fresh(f"{base}_{cls.lower()}"), dtype=dtype)
            )
    return built


def _array(ctx: WriteContext, ref: Any) -> np.ndarray:
    return np.asarray(ctx.archive.tensors[ref.key])


def _padding_arg(layer: Any, ctx: WriteContext, dtype: str) -> tuple[str, list[Any]]:
    if isinstance(layer.padding, str):
        return layer.padding, []
    if not any(v for pair in layer.padding for v in pair):
        return "valid", []
    return "valid", _explicit_padding(layer, ctx, layer.padding, dtype)


# -- writers ----------------------------------------------------------------------------------


@KERAS_WRITE.register("conv")
def _conv(layer: ConvLayer, ctx: WriteContext) -> list[Any]:
    """``Conv*D`` (or ``DepthwiseConv*D`` when every input channel is its own group)."""
    layers = ctx.keras.layers
    dtype = _float_dtype(layer, layer.weight)
    strides, subsample = layer.strides, []
    if any(st > 1 for st in layer.strides) and any(d > 1 for d in layer.dilation):
        # Keras refuses strides > 1 with dilation > 1: convolve at stride 1 on the explicitly
        # padded input, then keep every s-th output (a 1-wide max pool is an exact subsample).
        layer = layer.model_copy(update={"padding": _explicit_same(layer, ctx)})
        strides = (1,) * layer.rank
        subsample = [getattr(ctx.keras.layers, f"MaxPooling{layer.rank}D")(
            pool_size=1, strides=layer.strides, name=ctx.names.fresh(f"{ctx.names.by_spec[layer.name]}_stride"),
            dtype=dtype)]
    padding, pre = _padding_arg(layer, ctx, dtype)
    act, post = _activation(layer, ctx, dtype)
    weight = _array(ctx, layer.weight)
    common = dict(
        kernel_size=layer.kernel_size, strides=strides, padding=padding,
        dilation_rate=layer.dilation, use_bias=layer.use_bias, activation=act,
        dtype=dtype, name=ctx.names.by_spec[layer.name],
    )
    depthwise = layer.groups == layer.in_channels > 1 and layer.rank <= 2
    if depthwise:
        conv = getattr(layers, f"DepthwiseConv{layer.rank}D")(
            depth_multiplier=layer.out_channels // layer.in_channels, **common
        )
        weights = [depthwise_weight_to_keras(weight, layer.in_channels)]
    else:
        conv = getattr(layers, f"Conv{layer.rank}D")(layer.out_channels, groups=layer.groups, **common)
        weights = [conv_weight_to_keras(weight)]
    conv.build((None, *([None] * layer.rank), layer.in_channels))
    if layer.bias is not None:
        weights.append(_array(ctx, layer.bias))
    conv.set_weights(weights)
    ctx.dtype = dtype
    return [*pre, conv, *subsample, *post]


def _explicit_same(layer: ConvLayer, ctx: WriteContext) -> Any:
    if layer.padding != "same":
        return layer.padding
    from weightio.layouts import same_padding

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
def _separable(layer: SeparableConvLayer, ctx: WriteContext) -> list[Any]:
    """``SeparableConv*D``: depthwise ``[*k, in, m]``, pointwise ``[*1, in*m, out]``, bias."""
    dtype = _float_dtype(layer, layer.depthwise_weight)
    padding, pre = _padding_arg(layer, ctx, dtype)
    act, post = _activation(layer, ctx, dtype)
    conv = getattr(ctx.keras.layers, f"SeparableConv{layer.rank}D")(
        layer.out_channels, kernel_size=layer.kernel_size, strides=layer.strides,
        padding=padding, depth_multiplier=layer.depth_multiplier, dilation_rate=layer.dilation,
        use_bias=layer.use_bias, activation=act, dtype=dtype, name=ctx.names.by_spec[layer.name],
    )
    conv.build((None, *([None] * layer.rank), layer.in_channels))
    weights = [
        depthwise_weight_to_keras(_array(ctx, layer.depthwise_weight), layer.in_channels),
        conv_weight_to_keras(_array(ctx, layer.pointwise_weight)),
    ]
    if layer.bias is not None:
        weights.append(_array(ctx, layer.bias))
    conv.set_weights(weights)
    ctx.dtype = dtype
    return [*pre, conv, *post]


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
def _conv_transpose(layer: ConvTransposeLayer, ctx: WriteContext) -> list[Any]:
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
    act, post = _activation(layer, ctx, dtype)
    conv = getattr(ctx.keras.layers, f"Conv{layer.rank}DTranspose")(
        layer.out_channels, kernel_size=layer.kernel_size, strides=layer.strides,
        padding=padding, output_padding=output_padding, dilation_rate=layer.dilation,
        use_bias=layer.use_bias, activation=act, dtype=dtype, name=ctx.names.by_spec[layer.name],
    )
    conv.build((None, *([None] * layer.rank), layer.in_channels))
    weights = [conv_transpose_weight_to_keras(_array(ctx, layer.weight))]
    if layer.bias is not None:
        weights.append(_array(ctx, layer.bias))
    conv.set_weights(weights)
    ctx.dtype = dtype
    cropping = _explicit_padding(layer, ctx, [(-b, -a) for b, a in crop], dtype) if crop else []
    return [conv, *cropping, *post]


@KERAS_WRITE.register("pool")
def _pool(layer: PoolLayer, ctx: WriteContext) -> list[Any]:
    """``MaxPooling*D`` / ``AveragePooling*D``; explicit padding only where Keras is exact."""
    cls = "MaxPooling" if layer.op == "max" else "AveragePooling"
    pre: list[Any] = []
    padding = layer.padding
    if not isinstance(padding, str):
        if not any(v for pair in padding for v in pair):
            padding = "valid"
        elif layer.op == "avg" and layer.count_include_pad:
            pre, padding = _explicit_padding(layer, ctx, layer.padding, ctx.dtype), "valid"
        else:
            what = "max pooling (pads with -inf)" if layer.op == "max" else (
                "average pooling that excludes the padding")
            raise UnsupportedLayerError(
                f"explicit padding {list(layer.padding)} for {what} has no exact Keras "
                "equivalent (Keras offers only 'valid' and 'same')", layer=layer.name,
            )
    pool = getattr(ctx.keras.layers, f"{cls}{layer.rank}D")(
        pool_size=layer.pool_size, strides=layer.strides, padding=padding,
        name=ctx.names.by_spec[layer.name], dtype=ctx.dtype,
    )
    return [*pre, pool]


@KERAS_WRITE.register("global_pool")
def _global_pool(layer: GlobalPoolLayer, ctx: WriteContext) -> list[Any]:
    """``Global{Max,Average}Pooling*D(keepdims)``."""
    cls = "GlobalMaxPooling" if layer.op == "max" else "GlobalAveragePooling"
    return [getattr(ctx.keras.layers, f"{cls}{layer.rank}D")(
        keepdims=layer.keepdims, name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)]


@KERAS_WRITE.register("zero_padding")
def _zero_padding(layer: ZeroPaddingLayer, ctx: WriteContext) -> list[Any]:
    """``ZeroPadding*D`` (and ``Cropping*D`` for negative pads)."""
    built = _explicit_padding(layer, ctx, layer.padding, ctx.dtype)
    return built or [ctx.keras.layers.Identity(name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)]


@KERAS_WRITE.register("upsampling")
def _upsampling(layer: UpSamplingLayer, ctx: WriteContext) -> list[Any]:
    """``UpSampling*D`` with nearest-neighbour interpolation."""
    layers, name = ctx.keras.layers, ctx.names.by_spec[layer.name]
    if layer.rank == 1:
        return [layers.UpSampling1D(size=layer.size[0], name=name, dtype=ctx.dtype)]
    if layer.rank == 2:
        return [layers.UpSampling2D(size=layer.size, interpolation="nearest", name=name, dtype=ctx.dtype)]
    return [layers.UpSampling3D(size=layer.size, name=name, dtype=ctx.dtype)]


def _rank_in(ctx: WriteContext, layer: LayerBase) -> int | None:
    spec = ctx.archive.spec
    index = [l.name for l in spec.layers].index(layer.name)
    return _ranks(spec).get(spec.layer_inputs(index)[0])


@KERAS_WRITE.register("flatten")
def _flatten(layer: FlattenLayer, ctx: WriteContext) -> list[Any]:
    """Keras flattens its own form; a permute first when the recorded order differs."""
    have = getattr(ctx, "layout", PLAIN)
    keras_order = "channels_last" if have == CHANNELS else "channels_first"
    pre: list[Any] = []
    ndim = _rank_in(ctx, layer)
    if layer.order != keras_order and (ndim is None or ndim > 2):
        want = CHANNELS if layer.order == "channels_last" else PLAIN
        pre = _move(ctx, have, want, ndim, layer.name)
    return [*pre, ctx.keras.layers.Flatten(name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)]


@KERAS_WRITE.register("reshape")
def _reshape(layer: ReshapeLayer, ctx: WriteContext) -> list[Any]:
    """``Reshape`` of the form the source reshaped (permutes around it where forms differ)."""
    have = getattr(ctx, "layout", PLAIN)
    want = CHANNELS if layer.input_order == "channels_last" else PLAIN
    pre = _move(ctx, have, want, _rank_in(ctx, layer), layer.name)
    target = tuple(layer.target_shape)
    if layer.output_order == "channels_last":
        target = shape_channels_last(target)
    return [*pre, ctx.keras.layers.Reshape(target, name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)]


@KERAS_WRITE.register("permute")
def _permute_layer(layer: PermuteLayer, ctx: WriteContext) -> list[Any]:
    """One ``Permute`` composing the layout moves with the permutation (or Identity)."""
    have = getattr(ctx, "layout", PLAIN)
    wanted = _tags(ctx.archive.spec).get(layer.name, PLAIN)
    ndim = len(layer.dims) + 1
    identity = tuple(range(ndim))
    into = channels_first_axes(ndim) if have == CHANNELS else identity
    out = channels_last_axes(ndim) if wanted == CHANNELS else identity
    total = compose_permutation(compose_permutation(into, (0, *layer.dims)), out)
    name = ctx.names.by_spec[layer.name]
    if total == identity:
        return [ctx.keras.layers.Identity(name=name, dtype=ctx.dtype)]
    return [ctx.keras.layers.Permute(total[1:], name=name, dtype=ctx.dtype)]


def keras_weights(
    layer: LayerBase, arrays: dict[str, np.ndarray], target: LayerBase | None
) -> list[np.ndarray] | None:
    """A spatial layer's canonical arrays in Keras ``set_weights`` order and layout (for
    ``load_into``), or None for other kinds. ``target`` is the Keras layer read back, whose
    class tells a depthwise kernel from a grouped one.
    """
    bias = [arrays["bias"]] if "bias" in arrays else []
    if isinstance(layer, ConvLayer):
        depthwise = target is not None and "DepthwiseConv" in (target.source_class or "")
        kernel = (
            depthwise_weight_to_keras(arrays["weight"], layer.in_channels)
            if depthwise else conv_weight_to_keras(arrays["weight"])
        )
        return [kernel, *bias]
    if isinstance(layer, SeparableConvLayer):
        return [
            depthwise_weight_to_keras(arrays["depthwise_weight"], layer.in_channels),
            conv_weight_to_keras(arrays["pointwise_weight"]),
            *bias,
        ]
    if isinstance(layer, ConvTransposeLayer):
        return [conv_transpose_weight_to_keras(arrays["weight"]), *bias]
    return None
