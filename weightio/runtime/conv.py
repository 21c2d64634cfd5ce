"""Numpy reference semantics of the spatial kinds (channels-first, float64).

Written to be read: padding is made explicit first, then every window is gathered with
``sliding_window_view`` and reduced with ``einsum``/``max``/``mean``. Registered into
``weightio.runtime.RUNTIME``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from weightio.errors import InvalidInputError
from weightio.layouts.transforms import same_padding
from weightio.runtime.activations import apply_activation
from weightio.runtime.base import RUNTIME
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

Params = Mapping[str, np.ndarray]


def resolve_padding(
    padding: object,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """Explicit ``[(before, after)]`` for ``"valid"``, ``"same"`` (TF rule) or explicit pairs."""
    dilation = dilation or [1] * len(kernel)
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding == "same":
        return [same_padding(n, k, s, d) for n, k, s, d in zip(spatial, kernel, strides, dilation)]
    return [tuple(pair) for pair in padding]  # type: ignore[union-attr]


def _windows(
    x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilation: Sequence[int]
) -> np.ndarray:
    """``[N, C, *out, *k]``: every (dilated, strided) window of the already padded ``x``."""
    rank = len(kernel)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    axes = tuple(range(2, 2 + rank))
    if any(x.shape[a] < s for a, s in zip(axes, span)):
        raise InvalidInputError(
            f"input spatial size {x.shape[2:]} is smaller than the window {tuple(span)}"
        )
    view = sliding_window_view(x, span, axis=axes)
    index = (
        (slice(None), slice(None))
        + tuple(slice(None, None, s) for s in strides)
        + tuple(slice(None, None, d) for d in dilation)
    )
    return view[index]


def _pad(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0.0) -> np.ndarray:
    return np.pad(x, [(0, 0), (0, 0), *pads], constant_values=value)


def conv_nd(
    x: np.ndarray,
    weight: np.ndarray,
    *,
    strides: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    padding: object,
) -> np.ndarray:
    """Grouped N-d cross-correlation, channels-first, no bias."""
    rank = weight.ndim - 2
    pads = resolve_padding(padding, x.shape[2:], weight.shape[2:], strides, dilation)
    win = _windows(_pad(x, pads), weight.shape[2:], strides, dilation)
    n, c = win.shape[:2]
    out_sp = win.shape[2 : 2 + rank]
    win = win.reshape(n, groups, c // groups, *out_sp, *weight.shape[2:])
    w = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
    sp, kk = "xyz"[:rank], "pqr"[:rank]
    y = np.einsum(f"nGc{sp}{kk},Goc{kk}->nGo{sp}", win, w, optimize=True)
    return y.reshape(n, weight.shape[0], *out_sp)


def _bias_act(layer: object, y: np.ndarray, params: Params) -> np.ndarray:
    if params.get("bias") is not None:
        y = y + params["bias"].reshape(1, -1, *([1] * (y.ndim - 2)))
    return apply_activation(layer.activation, y)  # type: ignore[attr-defined]


def _check_channels(layer: object, x: np.ndarray, want: int) -> None:
    if x.ndim < 3 or x.shape[1] != want:
        raise InvalidInputError(
            f"layer {layer.name!r} expects [N, {want}, *spatial] (channels-first), "  # type: ignore[attr-defined]
            f"received {x.shape}"
        )


@RUNTIME.register("conv")
def _conv(layer: ConvLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    _check_channels(layer, xs[0], layer.in_channels)
    y = conv_nd(
        xs[0], params["weight"], strides=layer.strides, dilation=layer.dilation,
        groups=layer.groups, padding=layer.padding,
    )
    return _bias_act(layer, y, params)


@RUNTIME.register("separable_conv")
def _separable(layer: SeparableConvLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    _check_channels(layer, xs[0], layer.in_channels)
    mid = conv_nd(
        xs[0], params["depthwise_weight"], strides=layer.strides, dilation=layer.dilation,
        groups=layer.in_channels, padding=layer.padding,
    )
    ones = (1,) * layer.rank
    y = conv_nd(mid, params["pointwise_weight"], strides=ones, dilation=ones, groups=1, padding="valid")
    return _bias_act(layer, y, params)


@RUNTIME.register("conv_transpose")
def _conv_transpose(layer: ConvTransposeLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    _check_channels(layer, x, layer.in_channels)
    w = params["weight"]  # [in, out/g, *k]
    g, rank = layer.groups, layer.rank
    n, spatial = x.shape[0], x.shape[2:]
    full = [(L - 1) * s + (k - 1) * d + 1 for L, s, k, d in
            zip(spatial, layer.strides, layer.kernel_size, layer.dilation)]
    out_pg = layer.out_channels // g
    y = np.zeros((n, g, out_pg, *full))
    xg = x.reshape(n, g, layer.in_channels // g, *spatial)
    wg = w.reshape(g, layer.in_channels // g, out_pg, *layer.kernel_size)
    sp = "xyz"[:rank]
    for offset in itertools.product(*[range(k) for k in layer.kernel_size]):
        contrib = np.einsum(f"nGc{sp},Gco->nGo{sp}", xg, wg[(Ellipsis, *offset)], optimize=True)
        where = tuple(
            slice(o * d, o * d + (L - 1) * s + 1, s)
            for o, d, L, s in zip(offset, layer.dilation, spatial, layer.strides)
        )
        y[(slice(None), slice(None), slice(None), *where)] += contrib
    y = y.reshape(n, layer.out_channels, *full)
    # Crop (or extend with zeros, which then receive only the bias).
    extend = [(0, max(-end, 0)) for _, end in layer.cropping]
    y = _pad(y, extend)
    index = tuple(
        slice(begin, y.shape[2 + i] - max(end, 0)) for i, (begin, end) in enumerate(layer.cropping)
    )
    y = y[(slice(None), slice(None), *index)]
    return _bias_act(layer, y, params)


@RUNTIME.register("pool")
def _pool(layer: PoolLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    ones = (1,) * layer.rank
    pads = resolve_padding(layer.padding, x.shape[2:], layer.pool_size, layer.strides)
    axes = tuple(range(-layer.rank, 0))
    if layer.op == "max":
        win = _windows(_pad(x, pads, -np.inf), layer.pool_size, layer.strides, ones)
        return win.max(axis=axes)
    sums = _windows(_pad(x, pads), layer.pool_size, layer.strides, ones).sum(axis=axes)
    if layer.count_include_pad and layer.padding != "same":
        return sums / float(np.prod(layer.pool_size))
    ones_map = _pad(np.ones((1, 1, *x.shape[2:])), pads)
    counts = _windows(ones_map, layer.pool_size, layer.strides, ones).sum(axis=axes)
    return sums / counts


@RUNTIME.register("global_pool")
def _global_pool(layer: GlobalPoolLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    axes = tuple(range(2, xs[0].ndim))
    reduce = np.max if layer.op == "max" else np.mean
    return reduce(xs[0], axis=axes, keepdims=layer.keepdims)


@RUNTIME.register("zero_padding")
def _zero_padding(layer: ZeroPaddingLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    grown = _pad(xs[0], [(max(b, 0), max(a, 0)) for b, a in layer.padding])
    index = tuple(
        slice(max(-b, 0), grown.shape[2 + i] - max(-a, 0)) for i, (b, a) in enumerate(layer.padding)
    )
    return grown[(slice(None), slice(None), *index)]


@RUNTIME.register("upsampling")
def _upsampling(layer: UpSamplingLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    y = xs[0]
    for axis, factor in enumerate(layer.size, start=2):
        y = np.repeat(y, factor, axis=axis)
    return y


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


@RUNTIME.register("flatten")
def _flatten(layer: FlattenLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    if layer.order == "channels_last" and x.ndim > 2:
        x = _channels_last(x)
    return np.ascontiguousarray(x).reshape(x.shape[0], -1)


@RUNTIME.register("reshape")
def _reshape(layer: ReshapeLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    if layer.input_order == "channels_last" and x.ndim > 2:
        x = _channels_last(x)
    target = tuple(layer.target_shape)
    if layer.output_order == "channels_last":
        target = (*target[1:], target[0])
    try:
        y = np.ascontiguousarray(x).reshape(x.shape[0], *target)
    except ValueError:
        raise InvalidInputError(
            f"layer {layer.name!r} cannot reshape {x.shape[1:]} into {list(layer.target_shape)}"
        ) from None
    return np.moveaxis(y, -1, 1) if layer.output_order == "channels_last" else y


@RUNTIME.register("permute")
def _permute(layer: PermuteLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    return np.transpose(xs[0], (0, *layer.dims))
