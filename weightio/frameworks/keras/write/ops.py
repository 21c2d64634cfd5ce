"""Tensor-operation spec kinds -> Keras operations, as data: reductions, slices, arithmetic with
a stored constant, stored tensors used directly, dtype casts.

Keras 3 records these ``keras.ops`` calls in a Functional model as operations (``Mean``,
``GetItem``, ``Divide``, ``Cast``…), with constants inline in the call's arguments; they are
built-in, so a ``.keras`` file holding them loads with ``safe_mode=True``. Each mapping meets its
input in the form the layout bridge gives it (``ctx.layout``): reductions and stored tensors on
the canonical (channels-first) form, so their axes hold as they are; slices and arithmetic on
either, moving the axis or the constant to a channels-last feature map where they read one.

A learned constant (a layer scale, a position embedding) travels as an operation's constant:
exact, but frozen in Keras (a constant is not a trainable variable there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.frameworks.keras.write.base import (
    INPUT,
    KERAS_ANY,
    KERAS_FLOAT,
    KERAS_WRITE,
    OPERATIONS_MODULE,
    KerasLayer,
    WriteContext,
    layer_array,
)
from weightio.frameworks.keras.write.serialized import (
    Shape,
    layer_config,
    numpy_value,
)
from weightio.spec.base import CHANNELS
from weightio.spec.ops import ArithmeticLayer, CastLayer, ParameterLayer, ReduceLayer, SliceLayer

#: The ``keras.ops`` class of each reduction and each arithmetic operation.
_REDUCE_CLASS = {"mean": "Mean", "max": "Max", "min": "Min", "sum": "Sum"}
_ARITHMETIC_CLASS = {
    "add": "Add", "subtract": "Subtract", "multiply": "Multiply", "divide": "Divide",
    "maximum": "Maximum", "minimum": "Minimum", "power": "Power",
}
_CORE_OPERATIONS = "keras.src.ops.core"


def operation(
    class_name: str, name: str, output_shape: Shape, output_dtype: str, args: list[Any],
    *, module: str = OPERATIONS_MODULE, **config: Any,
) -> KerasLayer:
    """A Keras operation called as ``class_name(*args)``, ``INPUT`` standing for the tensor;
    ``config`` is the operation's own (``axis``, ``keepdims``, a ``dtype`` to make).
    """
    return KerasLayer(
        class_name, {"name": name, **config}, output_shape, module=module,
        registered_name=class_name, call="args", call_args=args, output_dtype=output_dtype,
    )


def keras_axis(axis: int, rank: int, layout: str, *, layer: str) -> int:
    """The Keras axis of canonical ``axis`` on a tensor of ``rank`` held in form ``layout``."""
    positive = axis if axis >= 0 else axis + rank
    if not 0 < positive < rank:
        raise UnsupportedLayerError(f"axis {axis} is out of range for a rank-{rank} input", layer=layer)
    if layout != CHANNELS:
        return positive
    return rank - 1 if positive == 1 else positive - 1


def _full() -> dict[str, Any]:
    return {"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}}


@KERAS_WRITE.register("reduce")
def _reduce(layer: ReduceLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``keras.ops.mean/max/min/sum`` over the canonical axes (the bridge gives the canonical form)."""
    rank = len(ctx.shape) + 1
    axes = sorted({keras_axis(a, rank, ctx.layout, layer=layer.name) for a in layer.axes})
    if layer.keepdims:
        shape = [1 if i in axes else d for i, d in enumerate(ctx.shape, start=1)]
    else:
        shape = [d for i, d in enumerate(ctx.shape, start=1) if i not in axes]
    config: dict[str, Any] = {"axis": axes, "keepdims": layer.keepdims}
    if layer.op in ("max", "min"):
        config["initial"] = None
    return [operation(_REDUCE_CLASS[layer.op], ctx.name_of(layer), tuple(shape), ctx.dtype, [INPUT], **config)]


@KERAS_WRITE.register("slice")
def _slice_layer(layer: SliceLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``x[:, …, start:stop:step]`` as Keras's ``GetItem``, on the axis where the input holds it."""
    rank = len(ctx.shape) + 1
    axis = keras_axis(layer.axis, rank, ctx.layout, layer=layer.name)
    key: list[Any] = [_full() for _ in range(axis)]
    step = None if layer.step == 1 else layer.step
    key.append({"class_name": "__slice__", "config": {"start": layer.start, "stop": layer.stop, "step": step}})
    shape = list(ctx.shape)
    size = shape[axis - 1]
    if size is not None:
        shape[axis - 1] = len(range(*slice(layer.start, layer.stop, layer.step).indices(size)))
    return [operation("GetItem", ctx.name_of(layer), tuple(shape), ctx.dtype, [INPUT, key])]


def keras_constant(constant: np.ndarray, rank: int, layout: str) -> np.ndarray:
    """A canonical constant (broadcasting against the input without its batch axis) laid out
    for Keras: on a channels-last feature map its channel axis moves last.
    """
    if layout != CHANNELS or constant.ndim == 0:
        return constant
    full = constant.reshape((1,) * (rank - 1 - constant.ndim) + constant.shape)
    return np.moveaxis(full, 0, -1)


@KERAS_WRITE.register("arithmetic")
def _arithmetic(layer: ArithmeticLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``keras.ops.add/subtract/…`` with the constant inline: a number, or an array."""
    constant = np.asarray(layer_array(ctx, layer.constant))
    if constant.dtype.name not in (*KERAS_FLOAT.values(), "int32", "int64"):
        raise UnsupportedLayerError(
            f"the constant is {constant.dtype}; Keras operations take float or int32/int64 constants",
            layer=layer.name,
        )
    rank = len(ctx.shape) + 1
    if constant.ndim > rank - 1:
        raise UnsupportedLayerError(
            f"the constant of shape {list(constant.shape)} has more axes than the input", layer=layer.name
        )
    laid = keras_constant(constant, rank, ctx.layout)
    value: Any = float(laid) if laid.ndim == 0 and laid.dtype.kind == "f" else numpy_value(laid)
    args = [value, INPUT] if layer.constant_first else [INPUT, value]
    out = broadcast(ctx.shape, laid.shape)
    return [operation(_ARITHMETIC_CLASS[layer.op], ctx.name_of(layer), out, ctx.dtype, args)]


def broadcast(shape: Shape, other: tuple[int, ...]) -> Shape:
    """The shape of ``x op c`` for ``x`` of Keras shape ``shape`` (free sizes ``None``)."""
    padded = (1,) * (len(shape) - len(other)) + tuple(other)
    return tuple(o if d == 1 and o != 1 else d for d, o in zip(shape, padded))


@KERAS_WRITE.register("parameter")
def _parameter(layer: ParameterLayer, ctx: WriteContext) -> list[KerasLayer]:
    """The stored value repeated over the batch: ``zeros_like(x[:, 0, …])`` shaped to the
    value's rank, plus the value (zeros plus the value is the value, exactly).
    """
    value = np.asarray(layer_array(ctx, layer.value))
    if layer.value.dtype not in KERAS_FLOAT:
        raise UnsupportedLayerError(f"the stored value is {value.dtype}; Keras takes floats here", layer=layer.name)
    dtype = KERAS_FLOAT[layer.value.dtype]
    base = ctx.name_of(layer)
    pick = operation("GetItem", ctx.names.fresh(f"{base}_batch"), (), ctx.dtype,
                     [INPUT, [_full(), *([0] * len(ctx.shape))]])
    zeros = operation("ZerosLike", ctx.names.fresh(f"{base}_zeros"), (), dtype, [INPUT], dtype=dtype)
    layers = [pick, zeros]
    if value.ndim:
        target = (1,) * value.ndim
        config = layer_config(ctx.names.fresh(f"{base}_shape"), dtype, target_shape=list(target))
        reshape = KerasLayer("Reshape", config, target)
        layers.append(reshape)
    value_arg: Any = float(value) if value.ndim == 0 else numpy_value(value)
    layers.append(operation("Add", base, tuple(int(d) for d in value.shape), dtype, [INPUT, value_arg]))
    ctx.dtype = dtype
    return layers


@KERAS_WRITE.register("cast")
def _cast(layer: CastLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``keras.ops.cast`` (its dtype names are numpy's)."""
    dtype = KERAS_ANY.get(layer.dtype)
    if dtype is None:
        raise UnsupportedLayerError(f"Keras has no {layer.dtype} dtype to cast to", layer=layer.name)
    ctx.dtype = dtype if dtype in KERAS_FLOAT.values() else ctx.dtype
    return [operation("Cast", ctx.name_of(layer), ctx.shape, dtype, [INPUT], module=_CORE_OPERATIONS, dtype=dtype)]
