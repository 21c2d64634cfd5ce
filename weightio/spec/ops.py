"""Tensor operations: reductions, slices, arithmetic with a stored constant, stored tensors used
directly, dtype casts.

These are the steps real models take between layers: a mean over axes, ``x[:, :, 0:64]`` (a
chunk or split), ``x * relu6(x + 3) / 6`` (hard-swish written out), ``gamma * x`` (layer scale),
``x + position_embedding``, a class token joined to the sequence, an integer mask turned into
floats. Each is one kind with canonical semantics: axes count the batch axis and refer to the
canonical layout (channels-first feature maps), constants are stored in that layout, shaped to
broadcast against the input without its batch axis (numpy rules). Readers translate a source's
axes and constants into these terms; writers translate them back.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from weightio.spec.base import CHANNELS, PLAIN, LayerBase, LayoutTrait, ParameterRole, Shape
from weightio.spec.dtypes import DTypeName
from weightio.spec.tensors import TensorRef


def _check_axes(axes: tuple[int, ...], rank: int | None, what: str) -> None:
    if not axes:
        raise ValueError(f"{what} needs at least one axis")
    if 0 in axes:
        raise ValueError(f"{what} axes {list(axes)} include the batch axis 0")
    if rank is not None:
        positive = [a if a >= 0 else a + rank for a in axes]
        if any(not 0 < a < rank for a in positive):
            raise ValueError(f"{what} axes {list(axes)} are out of range for rank {rank}")
        if len(set(positive)) != len(positive):
            raise ValueError(f"{what} axes {list(axes)} repeat an axis")


class ReduceLayer(LayerBase):
    """``mean``, ``max``, ``min`` or ``sum`` of ``x`` over ``axes`` (canonical, batch is 0).

    ``keepdims`` keeps the reduced axes as size 1. ``input_rank`` (batch included) is recorded
    when the reader knew it; writers use it to place negative axes.
    """

    kind: Literal["reduce"] = "reduce"
    op: Literal["mean", "max", "min", "sum"]
    axes: tuple[int, ...]
    keepdims: bool = False
    input_rank: int | None = Field(default=None, ge=2)

    layout: ClassVar[LayoutTrait] = "plain"

    @model_validator(mode="after")
    def _consistent(self) -> ReduceLayer:
        _check_axes(self.axes, self.input_rank, "reduce")
        return self

    def output_form(self, input_forms: list[str]) -> str | None:
        """A feature map keeps its form only with ``keepdims``."""
        is_map = bool(input_forms) and input_forms[0] == CHANNELS
        return CHANNELS if is_map and self.keepdims else PLAIN

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The input's rank, less the reduced axes unless kept."""
        rank = input_ranks[0] if input_ranks else None
        if rank is None:
            return None
        return rank if self.keepdims else rank - len(self.axes)

    def formula(self) -> str:
        """The reduction and its axes."""
        kept = " (kept as size 1)" if self.keepdims else ""
        return f"{self.op} of x over axes {tuple(self.axes)}{kept}"

    def detail(self) -> str:
        """Op, axes, keepdims."""
        return f"{self.op}, axes={tuple(self.axes)}, keepdims={self.keepdims}"


class SliceLayer(LayerBase):
    """``x[..., start:stop:step, ...]`` on one canonical ``axis`` (a chunk, a split, a crop).

    ``stop`` is exclusive; negative ``start``/``stop`` count from the end, as in Python. A
    ``split`` or ``chunk`` of the source reads as one slice per piece.
    """

    kind: Literal["slice"] = "slice"
    axis: int
    start: int = 0
    stop: int | None = None
    step: int = Field(default=1, gt=0)

    layout: ClassVar[LayoutTrait] = "per_channel"

    @model_validator(mode="after")
    def _consistent(self) -> SliceLayer:
        if self.axis == 0:
            raise ValueError("slice axis 0 is the batch axis")
        return self

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's shape with ``axis`` cut to the slice's length."""
        if not input_shapes or input_shapes[0] is None:
            return None
        shape = list(input_shapes[0])
        index = (self.axis if self.axis > 0 else self.axis + len(shape) + 1) - 1
        if not 0 <= index < len(shape):
            return None
        if shape[index] is not None:
            shape[index] = len(range(*slice(self.start, self.stop, self.step).indices(shape[index])))
        return tuple(shape)

    def formula(self) -> str:
        """The slice, written as Python would."""
        stop = "" if self.stop is None else str(self.stop)
        step = "" if self.step == 1 else f":{self.step}"
        return f"x[{self.start}:{stop}{step}] along axis {self.axis}"

    def detail(self) -> str:
        """Axis and bounds."""
        return f"axis={self.axis}, start={self.start}, stop={self.stop}, step={self.step}"


#: What ``arithmetic`` computes, for ``formula``: ``x`` the input, ``c`` the constant.
ARITHMETIC_TEXT = {
    "add": "x + c", "subtract": "x - c", "multiply": "x · c", "divide": "x / c",
    "maximum": "max(x, c)", "minimum": "min(x, c)", "power": "x ** c",
}


class ArithmeticLayer(LayerBase):
    """``x op c`` (or ``c op x`` with ``constant_first``): one input and a stored constant.

    ``constant`` is in the canonical layout and broadcasts against ``x`` without its batch axis
    (numpy rules: a scalar ``[]``, a per-channel ``[C, 1, 1]`` on a feature map, ``[L, D]`` for
    a position embedding). It is stored in the dtype the operation computes in (the input's
    floating dtype: a source's Python ``3`` becomes a float32 ``3.0`` beside float32 inputs), so
    every framework rounds the same way. Division is a true division (``x / 6`` is not
    ``x * (1/6)``).
    """

    kind: Literal["arithmetic"] = "arithmetic"
    op: Literal["add", "subtract", "multiply", "divide", "maximum", "minimum", "power"]
    constant_first: bool = False
    learned: bool = Field(
        default=False,
        description="The constant is a trained weight (a layer scale, a position embedding), "
        "not a literal of the source's code (the 3 and 6 of hard-swish).",
    )
    constant: TensorRef

    tensor_fields: ClassVar[tuple[str, ...]] = ("constant",)
    layout: ClassVar[LayoutTrait] = "per_channel"

    def parameter_role(self, param: str) -> ParameterRole:
        """A learned constant is trained; a literal one is state."""
        return "trainable" if self.learned else "buffer"

    def formula(self) -> str:
        """The operation, with the constant's shape."""
        text = ARITHMETIC_TEXT[self.op]
        if self.constant_first:
            text = {"x - c": "c - x", "x / c": "c / x", "x ** c": "c ** x"}.get(text, text)
        return f"{text}   (c of shape {list(self.constant.shape)})"

    def detail(self) -> str:
        """Op and constant shape."""
        first = ", constant first" if self.constant_first else ""
        return f"{self.op}, constant {self.constant.describe()}{first}"


class ParameterLayer(LayerBase):
    """A stored tensor used as a value: ``value`` repeated over the batch of its input.

    A class token, a learned query, a position table read whole. It reads one input only to
    take its batch size; ``value`` has no batch axis.
    """

    kind: Literal["parameter"] = "parameter"
    value: TensorRef

    tensor_fields: ClassVar[tuple[str, ...]] = ("value",)

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The value's rank plus the batch axis."""
        return len(self.value.shape) + 1

    def formula(self) -> str:
        """The stored value, once per sample."""
        return f"value, repeated over the batch of x   (value of shape {list(self.value.shape)})"

    def detail(self) -> str:
        """The value's shape and dtype."""
        return f"value {self.value.describe()}"


class CastLayer(LayerBase):
    """``x`` converted to ``dtype`` (an integer mask to floats, float32 to float16).

    Float to integer conversions truncate toward zero, as both frameworks do; values out of the
    target's range are refused by the runtime rather than wrapped.
    """

    kind: Literal["cast"] = "cast"
    dtype: DTypeName

    layout: ClassVar[LayoutTrait] = "elementwise"

    def formula(self) -> str:
        """The conversion."""
        return f"x as {self.dtype}"

    def detail(self) -> str:
        """The target dtype."""
        return f"dtype={self.dtype}"


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (ReduceLayer, SliceLayer, ArithmeticLayer, ParameterLayer, CastLayer)
