"""Spatial spec kinds -> idiomatic PyTorch modules (registered into TORCH_WRITE).

PyTorch is channels-first like the spec, so weights go in as they are. Padding is where the
frameworks differ: PyTorch accepts ``padding='same'`` only at stride 1 and pads symmetrically,
so Keras's asymmetric 'same' (the odd element at the end) becomes an explicit ``nn.ZeroPad*d``
before the convolution, computed from the model's fixed input size. 'same' pooling becomes the
pool's own padding with ``ceil_mode=True`` (windows start where Keras's do; ``count_include_pad
=False`` divides by the real elements) or, at stride 1, a wider padding and a one-element crop.
A flatten recorded channels-last is folded into the next ``nn.Linear`` beforehand (``prepare``).
"""

from __future__ import annotations

import weakref
from typing import Any

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import torch_dtype_for, torch_module
from weightio.frameworks.torch.read.conv import torch_pool_length
from weightio.frameworks.torch.write import quantized
from weightio.frameworks.torch.write.base import (
    TORCH_WRITE,
    activation_module,
    parameter,
    weight_norm_form,
)
from weightio.layouts.flow import refold_flatten
from weightio.layouts.transforms import channels_first_axes, channels_last_axes, same_padding
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

_SHAPES: weakref.WeakKeyDictionary[Archive, Any] = weakref.WeakKeyDictionary()


def prepare(archive: Archive) -> Archive:
    """Fold every channels-last flatten into its Dense, so ``nn.Flatten`` is exact."""
    return refold_flatten(archive, lambda layer, tag: "channels_first", tensor_shapes)  # type: ignore[return-value]


def _nn() -> Any:
    return torch_module("building PyTorch modules").nn


def _input_size(archive: Archive, layer: LayerBase, why: str) -> tuple[int, ...]:
    """The spatial size of ``layer``'s input, from a batch-1 run of the numpy runtime."""
    if archive not in _SHAPES:
        _SHAPES[archive] = tensor_shapes(archive)
    shapes = _SHAPES[archive]
    spec = archive.spec
    index = [l.name for l in spec.layers].index(layer.name)
    source = spec.layer_inputs(index)[0]
    if shapes is None:
        raise UnsupportedLayerError(
            f"{why} needs the input size, and the model's input has a free dimension; "
            "archive the model with a fixed input shape",
            layer=layer.name,
        )
    return shapes[source][1:]


def torch_pad_tuple(pairs: Any) -> tuple[int, ...]:
    """``[(before, after)]`` in axis order -> torch's last-axis-first flat tuple."""
    flat: list[int] = []
    for before, after in reversed([tuple(p) for p in pairs]):
        flat += [int(before), int(after)]
    return tuple(flat)


def _pad_module(rank: int, pairs: Any, value: float = 0.0) -> Any:
    nn = _nn()
    if value == 0.0:
        return getattr(nn, f"ZeroPad{rank}d")(torch_pad_tuple(pairs))
    return getattr(nn, f"ConstantPad{rank}d")(torch_pad_tuple(pairs), value)


def _conv_padding(layer: Any, archive: Archive) -> tuple[Any, list[Any]]:
    """(torch ``padding=``, modules to run before) for a conv's spec padding."""
    padding = layer.padding
    if padding == "valid":
        return 0, []
    if padding == "same":
        if all(s == 1 for s in layer.strides):
            # At stride 1 the padding does not depend on the input size; written out it is an
            # int padding (symmetric) or an explicit ZeroPad (odd total: the odd one at the end,
            # as Keras and torch's own 'same' do), never torch's copying 'same' path.
            size = tuple(0 for _ in layer.kernel_size)
        else:
            size = _input_size(archive, layer, "'same' padding with stride > 1")
        padding = tuple(
            same_padding(n, k, s, d)
            for n, k, s, d in zip(size, layer.kernel_size, layer.strides, layer.dilation)
        )
    if all(b == a for b, a in padding):
        return tuple(b for b, _ in padding), []
    return 0, [("pad", _pad_module(layer.rank, padding))]


def _weights(module: Any, archive: Archive, layer: Any, weight: str = "weight", bias: bool = True) -> Any:
    module.weight = parameter(archive.tensor(layer.name, weight))
    if bias and layer.use_bias:
        module.bias = parameter(archive.tensor(layer.name, "bias"))
    return module


def _activation(layer: Any) -> list[Any]:
    if layer.activation.name == "linear":
        return []
    return [activation_module(layer.activation, layer=layer.name)]


@TORCH_WRITE.register("conv")
def _conv(layer: ConvLayer, archive: Archive) -> list[Any]:
    padding, pre = _conv_padding(layer, archive)
    if quantized.kept_encoding(layer) is not None:  # to_torch(keep_int8=True)
        kept = quantized.int8_buffers(layer, archive)
        conv = quantized.MODULES.get("QuantizedConv")(
            kept["weight_int8"], kept["scale"], kept["zero_point"], kept["axis"], kept["dtype"],
            quantized.bias_parameter(layer, archive), stride=tuple(layer.strides),
            padding=padding, dilation=tuple(layer.dilation), groups=layer.groups,
        )
        return [*pre, conv, *_activation(layer)]
    weight = archive.tensor(layer.name, "weight")
    conv = getattr(_nn(), f"Conv{layer.rank}d")(
        layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.strides,
        padding=padding, dilation=layer.dilation, groups=layer.groups, bias=layer.use_bias,
        device="meta", dtype=torch_dtype_for(weight.dtype),
    )
    return [*pre, weight_norm_form(_weights(conv, archive, layer), layer, archive), *_activation(layer)]


@TORCH_WRITE.register("separable_conv")
def _separable(layer: SeparableConvLayer, archive: Archive) -> list[Any]:
    nn = _nn()
    depthwise = archive.tensor(layer.name, "depthwise_weight")
    dtype = torch_dtype_for(depthwise.dtype)
    padding, pre = _conv_padding(layer, archive)
    mid = layer.in_channels * layer.depth_multiplier
    conv_d = getattr(nn, f"Conv{layer.rank}d")(
        layer.in_channels, mid, layer.kernel_size, stride=layer.strides, padding=padding,
        dilation=layer.dilation, groups=layer.in_channels, bias=False, device="meta", dtype=dtype,
    )
    conv_p = getattr(nn, f"Conv{layer.rank}d")(
        mid, layer.out_channels, 1, bias=layer.use_bias, device="meta", dtype=dtype
    )
    conv_d.weight = parameter(depthwise)
    _weights(conv_p, archive, layer, "pointwise_weight")
    return [*pre, conv_d, ("pointwise", conv_p), *_activation(layer)]


@TORCH_WRITE.register("conv_transpose")
def _conv_transpose(layer: ConvTransposeLayer, archive: Archive) -> list[Any]:
    weight = archive.tensor(layer.name, "weight")
    pads, extras, crop = [], [], []
    for (begin, end), s, d in zip(layer.cropping, layer.strides, layer.dilation):
        extra = begin - end
        if 0 <= extra < max(s, d):
            pads.append(begin)
            extras.append(extra)
            crop.append((0, 0))
        elif end > begin:
            pads.append(begin)
            extras.append(0)
            crop.append((0, -(end - begin)))
        else:
            raise UnsupportedLayerError(
                f"cropping {list(layer.cropping)} extends the output further than torch's "
                "output_padding (< max(stride, dilation)) allows",
                layer=layer.name,
            )
    conv = getattr(_nn(), f"ConvTranspose{layer.rank}d")(
        layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.strides,
        padding=tuple(pads), output_padding=tuple(extras), groups=layer.groups,
        bias=layer.use_bias, dilation=layer.dilation, device="meta",
        dtype=torch_dtype_for(weight.dtype),
    )
    post = [("crop", _pad_module(layer.rank, crop))] if any(a for _, a in crop) else []
    return [_weights(conv, archive, layer), *post, *_activation(layer)]


def _pool_module(layer: PoolLayer, padding: Any, ceil_mode: bool, include: bool) -> Any:
    nn = _nn()
    if layer.op == "max":
        return getattr(nn, f"MaxPool{layer.rank}d")(
            layer.pool_size, stride=layer.strides, padding=padding, ceil_mode=ceil_mode
        )
    return getattr(nn, f"AvgPool{layer.rank}d")(
        layer.pool_size, stride=layer.strides, padding=padding, ceil_mode=ceil_mode,
        count_include_pad=include,
    )


@TORCH_WRITE.register("pool")
def _pool(layer: PoolLayer, archive: Archive) -> list[Any]:
    k, s = layer.pool_size, layer.strides
    if layer.padding == "valid":
        return [_pool_module(layer, 0, False, False)]
    if layer.padding != "same":
        pairs = [tuple(p) for p in layer.padding]
        if all(b == a and 2 * b <= kk for (b, a), kk in zip(pairs, k)):
            return [_pool_module(layer, tuple(b for b, _ in pairs), False, layer.count_include_pad)]
        if layer.op == "max":
            return [("pad", _pad_module(layer.rank, pairs, float("-inf"))), _pool_module(layer, 0, False, False)]
        if layer.count_include_pad:
            return [("pad", _pad_module(layer.rank, pairs)), _pool_module(layer, 0, False, True)]
        raise UnsupportedLayerError(
            f"asymmetric padding {pairs} for average pooling that excludes the padding has no "
            "exact PyTorch module", layer=layer.name,
        )
    size = _input_size(archive, layer, "'same' pooling")
    pairs = [same_padding(n, kk, ss) for n, kk, ss in zip(size, k, s)]
    tf_len = [-(-n // ss) for n, ss in zip(size, s)]
    if all(b == a for b, a in pairs):
        return [_pool_module(layer, tuple(b for b, _ in pairs), False, False)]
    # Windows start at i*s - before; ceil_mode keeps the last, partial one (as Keras does).
    if all(
        torch_pool_length(n, kk, ss, b, True) == t and 2 * b <= kk
        for n, kk, ss, (b, _), t in zip(size, k, s, pairs, tf_len)
    ):
        return [_pool_module(layer, tuple(b for b, _ in pairs), True, False)]
    if all(ss == 1 for ss in s):
        # Stride 1: pad the larger side on both, then drop the extra leading outputs.
        wide = tuple(a for _, a in pairs)
        crop = [(-(a - b), 0) for b, a in pairs]
        return [_pool_module(layer, wide, False, False), ("crop", _pad_module(layer.rank, crop))]
    raise UnsupportedLayerError(
        f"'same' pooling {k}/{s} on input {size} has no exact PyTorch module", layer=layer.name
    )


@TORCH_WRITE.register("global_pool")
def _global_pool(layer: GlobalPoolLayer, archive: Archive) -> list[Any]:
    nn = _nn()
    cls = "AdaptiveMaxPool" if layer.op == "max" else "AdaptiveAvgPool"
    pool = getattr(nn, f"{cls}{layer.rank}d")(1)
    return [pool] if layer.keepdims else [pool, ("flatten", nn.Flatten())]


@TORCH_WRITE.register("zero_padding")
def _zero_padding(layer: ZeroPaddingLayer, archive: Archive) -> list[Any]:
    return [_pad_module(layer.rank, layer.padding)]


@TORCH_WRITE.register("upsampling")
def _upsampling(layer: UpSamplingLayer, archive: Archive) -> list[Any]:
    return [_nn().Upsample(scale_factor=tuple(float(f) for f in layer.size), mode="nearest")]


def permute_module(dims: tuple[int, ...]) -> Any:
    """An ``nn.Module`` computing ``x.permute(0, *dims)`` (torch has no ``nn.Permute``)."""
    return _permute_class()(dims)


_PERMUTE: list[Any] = []


def _permute_class() -> Any:
    if not _PERMUTE:
        nn = _nn()

        class Permute(nn.Module):  # type: ignore[misc,name-defined]
            """``x.permute(0, *dims)``: an exact layout move where no weight can absorb it."""

            def __init__(self, dims: tuple[int, ...]) -> None:
                super().__init__()
                self.dims = tuple(int(d) for d in dims)

            def forward(self, x: Any) -> Any:
                return x.permute(0, *self.dims)

            def extra_repr(self) -> str:
                return f"dims={self.dims}"

        Permute.__module__ = __name__
        _PERMUTE.append(Permute)
    return _PERMUTE[0]


def _source_shape(archive: Archive, layer: LayerBase) -> tuple[int, ...] | None:
    if archive not in _SHAPES:
        _SHAPES[archive] = tensor_shapes(archive)
    shapes = _SHAPES[archive]
    if shapes is None:
        return None
    spec = archive.spec
    index = [l.name for l in spec.layers].index(layer.name)
    return shapes[spec.layer_inputs(index)[0]]


@TORCH_WRITE.register("flatten")
def _flatten(layer: FlattenLayer, archive: Archive) -> list[Any]:
    nn = _nn()
    if layer.order == "channels_first":
        return [nn.Flatten()]
    shape = _source_shape(archive, layer)
    if shape is not None and len(shape) < 2:
        return [nn.Flatten()]
    if shape is None:
        raise UnsupportedLayerError(
            "a channels-last flatten with no dense after it needs the input rank; archive the "
            "model with a fixed input shape", layer=layer.name,
        )
    ndim = len(shape) + 1
    return [("to_channels_last", permute_module(channels_last_axes(ndim)[1:])), nn.Flatten()]


@TORCH_WRITE.register("reshape")
def _reshape(layer: ReshapeLayer, archive: Archive) -> list[Any]:
    nn = _nn()
    shape = _source_shape(archive, layer)
    target = list(layer.target_shape)
    if layer.output_order == "channels_last":
        target = [*target[1:], target[0]]
    if -1 in target:
        if shape is None:
            raise UnsupportedLayerError("reshape with -1 needs a fixed input shape", layer=layer.name)
        total = 1
        for d in shape:
            total *= d
        known = 1
        for d in target:
            known *= d if d != -1 else 1
        target[target.index(-1)] = total // known
    pre: list[Any] = []
    if layer.input_order == "channels_last" and (shape is None or len(shape) >= 2):
        if shape is None:
            raise UnsupportedLayerError("a channels-last reshape needs a fixed input shape", layer=layer.name)
        pre.append(("to_channels_last", permute_module(channels_last_axes(len(shape) + 1)[1:])))
    if shape is None or len(shape) != 1:
        pre.append(("flatten", nn.Flatten()))
    post: list[Any] = []
    if layer.output_order == "channels_last":
        post.append(("to_channels_first", permute_module(channels_first_axes(len(target) + 1)[1:])))
    return [*pre, nn.Unflatten(1, tuple(target)), *post]


@TORCH_WRITE.register("permute")
def _permute(layer: PermuteLayer, archive: Archive) -> list[Any]:
    return [permute_module(layer.dims)]
