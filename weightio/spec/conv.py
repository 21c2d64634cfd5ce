"""Spatial layer kinds: convolution, pooling, padding, upsampling and the reshaping family.

Canonical semantics are **channels-first**: a spatial tensor is ``[N, C, *spatial]`` (PyTorch's
layout), whatever the source used. A Keras model holds the same tensor channels-last; the archive
records that on its inputs (``InputSpec.layout``) and ``weightio.layouts.flow`` works out which
tensors in the graph are spatial, so writers and verification can move between the two forms
with exact permutations (``weightio.layouts.transforms``).

Padding is stored as ``"valid"``, ``"same"`` or explicit ``[[before, after], ...]`` per spatial
dimension. ``"same"`` means TensorFlow/Keras semantics: ``out = ceil(in / stride)``, total
padding ``max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)``, the odd element at the
*end* (PyTorch's stride-1 ``padding='same'`` agrees). It depends on the input size, so it is
kept symbolic rather than resolved.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Union

from pydantic import Field, model_validator

from weightio.spec.activations import LINEAR, ActivationFn
from weightio.spec.base import (
    CHANNELS,
    PLAIN,
    LayerBase,
    LayoutTrait,
    Shape,
    check_bias,
    check_param_shape,
    window_size,
)
from weightio.spec.tensors import TensorRef

Rank = Literal[1, 2, 3]
PadPair = tuple[int, int]
Padding = Union[Literal["valid", "same"], tuple[PadPair, ...]]  # noqa: UP007 - pydantic alias
Order = Literal["channels_first", "channels_last"]


def _check_padding(padding: Padding, rank: int, *, allow_negative: bool = False) -> None:
    if isinstance(padding, str):
        return
    if len(padding) != rank:
        raise ValueError(f"padding has {len(padding)} pairs for {rank} spatial dimension(s)")
    if not allow_negative and any(p < 0 for pair in padding for p in pair):
        raise ValueError(f"padding {list(padding)} has a negative entry")


def conv_detail(layer: ConvLayer | SeparableConvLayer | ConvTransposeLayer) -> str:
    """The one-line hyper-parameters of the convolution kinds."""
    text = (
        f"{layer.in_channels}->{layer.out_channels}, kernel {tuple(layer.kernel_size)}, "
        f"stride {tuple(layer.strides)}"
    )
    padding = getattr(layer, "padding", None)
    if padding is not None:
        text += f", padding {padding if isinstance(padding, str) else [tuple(p) for p in padding]}"
    if getattr(layer, "groups", 1) != 1:
        text += f", groups {layer.groups}"
    if layer.activation.name != "linear":
        text += f", activation={layer.activation.describe()}"
    return text


def _check_tuples(layer: LayerBase, rank: int, *names: str) -> None:
    for name in names:
        value = getattr(layer, name)
        if len(value) != rank:
            raise ValueError(f"{name} {list(value)} has {len(value)} entries, rank is {rank}")
        if any(v <= 0 for v in value):
            raise ValueError(f"{name} {list(value)} must be positive")


def _windowed(layer: LayerBase, input_shapes: list[Shape], channels: int, kernel: tuple[int, ...],
              strides: tuple[int, ...], dilation: tuple[int, ...], padding: Padding) -> Shape | None:
    """``[channels, *spatial]`` after a windowed op over ``[C, *spatial]``."""
    if not input_shapes or len(input_shapes[0]) != len(kernel) + 1:
        return None
    pads = [padding] * len(kernel) if isinstance(padding, str) else list(padding)
    return (channels, *(window_size(n, k, st, d, p) for n, k, st, d, p in
                        zip(input_shapes[0][1:], kernel, strides, dilation, pads)))


class ConvLayer(LayerBase):
    """N-d convolution (cross-correlation), channels-first, with groups.

    ``weight [out_channels, in_channels / groups, *kernel_size]``. Keras ``DepthwiseConv*D`` is
    the case ``groups == in_channels`` (output channel ``c * multiplier + j``).
    """

    kind: Literal["conv"] = "conv"
    rank: Rank
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = Field(default=1, gt=0)
    padding: Padding = "valid"
    use_bias: bool = True
    activation: ActivationFn = LINEAR
    weight: TensorRef
    bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")

    @model_validator(mode="after")
    def _shapes_agree(self) -> ConvLayer:
        _check_tuples(self, self.rank, "kernel_size", "strides", "dilation")
        _check_padding(self.padding, self.rank)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}"
            )
        want = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        check_param_shape(self.weight, want, what="conv weight", layout="[out, in/groups, *kernel]")
        check_bias(self.bias, self.use_bias, self.out_channels, weight=self.weight, what="conv")
        return self

    layout: ClassVar[LayoutTrait] = "spatial"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A feature map of this rank."""
        return self.rank + 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """``[out_channels, *windowed spatial]``."""
        return _windowed(self, input_shapes, self.out_channels, self.kernel_size, self.strides,
                         self.dilation, self.padding)

    def formula(self) -> str:
        """``conv2d(x, W) + b``, groups and activation included."""
        grouped = f", groups {self.groups}" if self.groups != 1 else ""
        bias = " + b" if self.bias is not None else ""
        return self.activation.around(f"conv{self.rank}d(x, W{grouped}){bias}")

    def detail(self) -> str:
        """Channels, kernel, stride, padding, groups, activation."""
        return conv_detail(self)


class SeparableConvLayer(LayerBase):
    """Depthwise convolution (``groups = in_channels``) then a pointwise 1×1 one; bias at the end.

    ``depthwise_weight [in * depth_multiplier, 1, *k]``, ``pointwise_weight [out, in * m, 1…]``.
    """

    kind: Literal["separable_conv"] = "separable_conv"
    rank: Rank
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    depth_multiplier: int = Field(default=1, gt=0)
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Padding = "valid"
    use_bias: bool = True
    activation: ActivationFn = LINEAR
    depthwise_weight: TensorRef
    pointwise_weight: TensorRef
    bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = ("depthwise_weight", "pointwise_weight", "bias")

    @model_validator(mode="after")
    def _shapes_agree(self) -> SeparableConvLayer:
        _check_tuples(self, self.rank, "kernel_size", "strides", "dilation")
        _check_padding(self.padding, self.rank)
        mid = self.in_channels * self.depth_multiplier
        want_d = (mid, 1, *self.kernel_size)
        want_p = (self.out_channels, mid, *([1] * self.rank))
        if tuple(self.depthwise_weight.shape) != want_d:
            raise ValueError(f"depthwise_weight shape {list(self.depthwise_weight.shape)} != {list(want_d)}")
        if tuple(self.pointwise_weight.shape) != want_p:
            raise ValueError(f"pointwise_weight shape {list(self.pointwise_weight.shape)} != {list(want_p)}")
        check_bias(self.bias, self.use_bias, self.out_channels, weight=self.pointwise_weight, what="separable_conv")
        return self

    layout: ClassVar[LayoutTrait] = "spatial"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A feature map of this rank."""
        return self.rank + 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """``[out_channels, *windowed spatial]``."""
        return _windowed(self, input_shapes, self.out_channels, self.kernel_size, self.strides,
                         self.dilation, self.padding)

    def formula(self) -> str:
        """Depthwise, then pointwise, then the bias."""
        bias = " + b" if self.bias is not None else ""
        return self.activation.around(f"pointwise(depthwise(x, W_dw), W_pw){bias}")

    def detail(self) -> str:
        """Channels, kernel, stride, padding, activation."""
        return conv_detail(self)


class ConvTransposeLayer(LayerBase):
    """Transposed convolution (the adjoint of ``conv``), channels-first.

    ``weight [in_channels, out_channels / groups, *k]`` (PyTorch's layout). The full output has
    ``(in - 1) * stride + (k - 1) * dilation + 1`` positions per dimension; ``cropping`` removes
    ``[begin, end]`` of them (a negative ``end`` extends the output with positions that receive
    only the bias). PyTorch ``padding=p, output_padding=q`` is ``[p, p - q]``.
    """

    kind: Literal["conv_transpose"] = "conv_transpose"
    rank: Rank
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = Field(default=1, gt=0)
    cropping: tuple[PadPair, ...]
    use_bias: bool = True
    activation: ActivationFn = LINEAR
    weight: TensorRef
    bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")

    @model_validator(mode="after")
    def _shapes_agree(self) -> ConvTransposeLayer:
        _check_tuples(self, self.rank, "kernel_size", "strides", "dilation")
        _check_padding(self.cropping, self.rank, allow_negative=True)
        if any(b < 0 for b, _ in self.cropping):
            raise ValueError(f"cropping {list(self.cropping)} crops a negative amount at the start")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in and out channels")
        want = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        check_param_shape(self.weight, want, what="conv_transpose weight",
                          layout="[in, out/groups, *kernel]")
        check_bias(self.bias, self.use_bias, self.out_channels, weight=self.weight, what="conv_transpose")
        return self

    layout: ClassVar[LayoutTrait] = "spatial"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A feature map of this rank."""
        return self.rank + 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """``(in - 1) * stride + (k - 1) * dilation + 1`` per axis, less the cropping."""
        if not input_shapes or len(input_shapes[0]) != self.rank + 1:
            return None
        spatial = [
            None if n is None else (n - 1) * s + (k - 1) * d + 1 - begin - end
            for n, s, k, d, (begin, end) in zip(input_shapes[0][1:], self.strides,
                                                self.kernel_size, self.dilation, self.cropping)
        ]
        return (self.out_channels, *spatial)

    def formula(self) -> str:
        """``conv_transpose2d(x, W) + b``."""
        bias = " + b" if self.bias is not None else ""
        return self.activation.around(f"conv_transpose{self.rank}d(x, W){bias}")

    def detail(self) -> str:
        """Channels, kernel, stride, groups, activation."""
        return conv_detail(self)


class PoolLayer(LayerBase):
    """Max or average pooling over the spatial axes.

    Padding: ``"same"`` (Keras: max ignores the padding, average divides by the number of real
    elements), ``"valid"``, or explicit pairs (PyTorch: max pads with −∞; average pads with
    zeros, counted when ``count_include_pad``).
    """

    kind: Literal["pool"] = "pool"
    rank: Rank
    op: Literal["max", "avg"]
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Padding = "valid"
    count_include_pad: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> PoolLayer:
        _check_tuples(self, self.rank, "pool_size", "strides")
        _check_padding(self.padding, self.rank)
        return self

    layout: ClassVar[LayoutTrait] = "spatial"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A feature map of this rank."""
        return self.rank + 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The channels kept, the spatial axes windowed."""
        if not input_shapes or not input_shapes[0]:
            return None
        return _windowed(self, input_shapes, input_shapes[0][0], self.pool_size,  # type: ignore[arg-type]
                         self.strides, (1,) * self.rank, self.padding)

    def formula(self) -> str:
        """``max_pool2d(x, size (2, 2), stride (2, 2))``."""
        return f"{self.op}_pool{self.rank}d(x, size {tuple(self.pool_size)}, stride {tuple(self.strides)})"

    def detail(self) -> str:
        """Op, size, stride, padding."""
        return (f"{self.op}, size {tuple(self.pool_size)}, stride {tuple(self.strides)}, "
                f"padding {self.padding}")


class GlobalPoolLayer(LayerBase):
    """Mean or max over every spatial axis; ``keepdims`` keeps them as size 1."""

    kind: Literal["global_pool"] = "global_pool"
    rank: Rank
    op: Literal["max", "avg"]
    keepdims: bool = False

    layout: ClassVar[LayoutTrait] = "spatial_reduce"

    def output_form(self, input_forms: list[str]) -> str | None:
        """A map of size-1 axes with ``keepdims``, else a vector."""
        return CHANNELS if self.keepdims else PLAIN

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The input's rank with ``keepdims``, else a vector."""
        return self.rank + 2 if self.keepdims else 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """``[C]``, or ``[C, 1, …]`` with ``keepdims``."""
        if not input_shapes or not input_shapes[0]:
            return None
        channels = input_shapes[0][0]
        return (channels, *([1] * self.rank)) if self.keepdims else (channels,)

    def formula(self) -> str:
        """Mean or max over the spatial axes."""
        kept = " (kept as size 1)" if self.keepdims else ""
        return f"{self.op} of x over its spatial axes{kept}"

    def detail(self) -> str:
        """Op and keepdims."""
        return f"{self.op}, keepdims={self.keepdims}"


class ZeroPaddingLayer(LayerBase):
    """Pads the spatial axes with zeros, ``[[before, after], ...]`` in axis order.

    A negative entry crops that many elements instead (Keras ``Cropping*D``, torch's negative
    ``F.pad``).
    """

    kind: Literal["zero_padding"] = "zero_padding"
    rank: Rank
    padding: tuple[PadPair, ...]

    @model_validator(mode="after")
    def _consistent(self) -> ZeroPaddingLayer:
        _check_padding(self.padding, self.rank, allow_negative=True)
        return self

    layout: ClassVar[LayoutTrait] = "spatial"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A feature map of this rank."""
        return self.rank + 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """Each spatial axis grown by its pads (shrunk by negative ones)."""
        if not input_shapes or len(input_shapes[0]) != self.rank + 1:
            return None
        x = input_shapes[0]
        return (x[0], *(None if n is None else n + b + a for n, (b, a) in zip(x[1:], self.padding)))

    def formula(self) -> str:
        """Zeros around the spatial axes."""
        return f"x padded with zeros {[tuple(p) for p in self.padding]} on its spatial axes"

    def detail(self) -> str:
        """The pads."""
        return f"padding {[tuple(p) for p in self.padding]}"


class UpSamplingLayer(LayerBase):
    """Nearest-neighbour upsampling by integer factors: each element repeated ``size`` times."""

    kind: Literal["upsampling"] = "upsampling"
    rank: Rank
    size: tuple[int, ...]
    interpolation: Literal["nearest"] = "nearest"

    @model_validator(mode="after")
    def _consistent(self) -> UpSamplingLayer:
        _check_tuples(self, self.rank, "size")
        return self

    layout: ClassVar[LayoutTrait] = "spatial"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A feature map of this rank."""
        return self.rank + 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """Each spatial axis times its factor."""
        if not input_shapes or len(input_shapes[0]) != self.rank + 1:
            return None
        x = input_shapes[0]
        return (x[0], *(None if n is None else n * f for n, f in zip(x[1:], self.size)))

    def formula(self) -> str:
        """Nearest-neighbour repetition."""
        return f"x repeated {tuple(self.size)} times along its spatial axes (nearest)"

    def detail(self) -> str:
        """The factors."""
        return f"size {tuple(self.size)}"


class FlattenLayer(LayerBase):
    """Flattens everything but the batch axis, in the order the source flattened in.

    ``channels_first``: C-order of the canonical tensor (PyTorch, or any non-spatial tensor).
    ``channels_last``: the channels axis moved last first (Keras on a feature map), so the dense
    layer after it keeps the source's weight rows; writers permute those rows when their
    framework flattens in the other order.
    """

    kind: Literal["flatten"] = "flatten"
    order: Order = "channels_first"

    layout: ClassVar[LayoutTrait] = "flatten"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A vector."""
        return 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """One axis holding every element."""
        if not input_shapes:
            return None
        x = input_shapes[0]
        return (None,) if any(n is None for n in x) else (_product(x),)

    def formula(self) -> str:
        """A vector, in the order recorded."""
        return f"x as a vector, read in {self.order.replace('_', '-')} order"

    def detail(self) -> str:
        """The order."""
        return f"order={self.order}"


class ReshapeLayer(LayerBase):
    """Reshape (C order) of everything but the batch axis, in the source's own layout.

    ``target_shape`` is the canonical output shape (may hold one ``-1``). ``input_order`` /
    ``output_order`` = ``channels_last`` means the source reshaped the channels-last form of a
    spatial tensor (Keras): the input is moved channels-last before, the output channels-first
    after.
    """

    kind: Literal["reshape"] = "reshape"
    target_shape: tuple[int, ...]
    input_order: Order = "channels_first"
    output_order: Order = "channels_first"

    @model_validator(mode="after")
    def _consistent(self) -> ReshapeLayer:
        if sum(1 for d in self.target_shape if d == -1) > 1:
            raise ValueError(f"target_shape {list(self.target_shape)} has more than one -1")
        if any(d == 0 or d < -1 for d in self.target_shape):
            raise ValueError(f"target_shape {list(self.target_shape)} has an invalid entry")
        if self.output_order == "channels_last" and len(self.target_shape) < 2:
            raise ValueError("output_order channels_last needs a spatial target_shape")
        return self

    layout: ClassVar[LayoutTrait] = "reshape"

    def output_form(self, input_forms: list[str]) -> str | None:
        """A feature map when the source reshaped into its channels-last form."""
        return CHANNELS if self.output_order == "channels_last" else PLAIN

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The target's rank."""
        return len(self.target_shape) + 1

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The target, its ``-1`` resolved from the input's size when that is known."""
        target = list(self.target_shape)
        x = input_shapes[0] if input_shapes else None
        known = x is not None and all(n is not None for n in x)
        if -1 in target:
            rest = _product(d for d in target if d != -1)
            if not known or rest == 0:
                return tuple(None if d == -1 else d for d in target)
            target[target.index(-1)] = _product(x) // rest  # type: ignore[arg-type]
        return tuple(target)

    def formula(self) -> str:
        """The target shape."""
        return f"x reshaped to {tuple(self.target_shape)}"

    def detail(self) -> str:
        """Target shape and the orders read and written."""
        return (f"target={tuple(self.target_shape)}, input_order={self.input_order}, "
                f"output_order={self.output_order}")


class PermuteLayer(LayerBase):
    """Permutes the non-batch axes: ``y = x.transpose(0, *dims)`` (dims count from 1)."""

    kind: Literal["permute"] = "permute"
    dims: tuple[int, ...]

    @model_validator(mode="after")
    def _consistent(self) -> PermuteLayer:
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"dims {list(self.dims)} is not a permutation of 1..{len(self.dims)}")
        return self

    layout: ClassVar[LayoutTrait] = "permute"

    def output_form(self, input_forms: list[str]) -> str | None:
        """Decided by the consumers: a feature map when one of them reads one."""
        return None

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The input's rank."""
        return len(self.dims) + 1

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's axes in the new order."""
        if not input_shapes or len(input_shapes[0]) != len(self.dims):
            return None
        return tuple(input_shapes[0][d - 1] for d in self.dims)

    def formula(self) -> str:
        """The axis order."""
        return f"x with axes reordered to {tuple(self.dims)}"

    def detail(self) -> str:
        """The axis order."""
        return f"dims={tuple(self.dims)}"


def _product(values: object) -> int:
    result = 1
    for v in values:  # type: ignore[attr-defined]
        result *= v
    return result


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS: tuple[type[LayerBase], ...] = (
    ConvLayer,
    SeparableConvLayer,
    ConvTransposeLayer,
    PoolLayer,
    GlobalPoolLayer,
    ZeroPaddingLayer,
    UpSamplingLayer,
    FlattenLayer,
    ReshapeLayer,
    PermuteLayer,
)
