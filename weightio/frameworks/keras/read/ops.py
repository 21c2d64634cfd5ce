"""Keras 3 operations in a Functional model -> the spec's tensor operations.

A Functional model records every ``keras.ops`` call between layers as an operation "layer"
(``keras.src.ops.numpy.Add``, ``keras.src.ops.nn.Relu6``…) whose constants sit inline in the
call's arguments: MobileNetV3 writes hard-swish as ``x * relu6(x + 3) / 6``. These readers are
registered under the operation's module and class (``base.class_key``), apart from the layers
of the same class name, and map each call to an existing kind: arithmetic with a constant,
a merge of tensors (broadcasting), an activation, a reduction, a reshape or a permute.

Constants and axes are given for Keras's own tensors; on a channels-last feature map they are
moved to the canonical (channels-first) form here, exactly (a transpose, never arithmetic).
"""

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
from weightio.frameworks.keras.read.conv import permute_from_keras, reshape_from_keras
from weightio.frameworks.keras.read.graph import (
    is_tensor_ref,
    node_arguments,
    node_tensors,
    part_name,
)
from weightio.frameworks.keras.read.merge import read_concatenate
from weightio.frameworks.keras.read.norm import canonical_axis, single_axis
from weightio.layouts.flow import CHANNELS
from weightio.spec.activations import ActivationFn
from weightio.spec.base import LayerBase
from weightio.spec.core import ActivationLayer
from weightio.spec.merge import MergeLayer
from weightio.spec.ops import ArithmeticLayer, ParameterLayer, ReduceLayer, SliceLayer

NUMPY = "keras.src.ops.numpy"
NN = "keras.src.ops.nn"

#: ``keras.ops`` arithmetic classes -> the spec's arithmetic op (with a constant operand).
_ARITHMETIC = {
    "Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Divide": "divide",
    "TrueDivide": "divide", "Maximum": "maximum", "Minimum": "minimum", "Power": "power",
}
#: The same operations between two tensors (broadcasting), where a merge kind computes them.
_MERGE = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Maximum": "maximum",
          "Minimum": "minimum"}
#: ``keras.ops`` activations (``keras.src.ops.nn`` unless noted) -> the spec's function.
_ACTIVATIONS = {
    f"{NN}.Relu": "relu", f"{NN}.Relu6": "relu6", f"{NN}.Sigmoid": "sigmoid",
    f"{NN}.HardSigmoid": "hard_sigmoid", f"{NN}.HardSilu": "hard_silu", f"{NN}.Silu": "silu",
    f"{NN}.Softplus": "softplus", f"{NN}.Softsign": "softsign", f"{NUMPY}.Tanh": "tanh",
    f"{NN}.Gelu": "gelu",
}
_REDUCE = {"Mean": "mean", "Max": "max", "Min": "min", "Sum": "sum"}


def _tensor_info(entry: KerasLayerEntry) -> list[dict[str, Any]]:
    """Shape and dtype of each tensor the call reads, as Keras recorded them."""
    info = node_tensors(entry.raw)
    if not info:
        raise NotExact(f"{entry.class_name}: the call records no input tensors")
    return info


def _input_shape(entry: KerasLayerEntry, index: int = 0) -> tuple[int | None, ...]:
    shape = _tensor_info(entry)[index].get("shape")
    if not isinstance(shape, (list, tuple)):
        raise NotExact(f"{entry.class_name}: the input's shape is not recorded")
    return tuple(shape)


def _constant(value: Any, what: str) -> np.ndarray:
    """A call argument that is a number or a serialized tensor/array, as an array."""
    if isinstance(value, dict) and value.get("class_name") in ("__tensor__", "__numpy__"):
        value = (value.get("config") or {}).get("value")
    if isinstance(value, bool):
        raise NotExact(f"{what}: a boolean operand")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NotExact(f"{what}: operand {short(value)} is neither a tensor nor a number") from None
    if not np.all(np.isfinite(array)):
        raise NotExact(f"{what}: a non-finite constant")
    return array


def canonical_constant(constant: np.ndarray, rank: int, is_map: bool) -> np.ndarray:
    """A constant broadcasting against a Keras tensor of ``rank`` (batch included), laid out to
    broadcast against the canonical tensor without its batch axis.

    On a channels-last feature map the constant is padded to the map's rank and its last
    (channel) axis moved first; on plain data it is already canonical.
    """
    if constant.ndim > rank - 1:
        raise NotExact(f"a constant of shape {list(constant.shape)} has more axes than the input")
    if not is_map or constant.ndim == 0:
        return constant
    full = constant.reshape((1,) * (rank - 1 - constant.ndim) + constant.shape)
    return np.ascontiguousarray(np.moveaxis(full, -1, 0))


@KERAS_READ.register(
    *(f"{NUMPY}.{name}" for name in _ARITHMETIC), produces=("arithmetic", *sorted(set(_MERGE.values())))
)
def _arithmetic(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.add(x, 3.0)``, ``ops.multiply(x, c)``, ``ops.subtract(2.0, x)``… with a constant,
    or between two tensors of one rank (a broadcasting merge).
    """
    expect_weights(entry, 0)
    args = node_arguments(entry.raw)[:2]
    what = f"keras.ops {entry.class_name}"
    flags = [is_tensor_ref(a) for a in args]
    if len(args) != 2:
        raise NotExact(f"{what} called with {len(args)} positional arguments")
    info = _tensor_info(entry)
    if all(flags):
        kind = _MERGE.get(entry.class_name)
        ranks = {len(t.get("shape") or ()) for t in info}
        if kind is None:
            raise NotExact(f"{what} of two tensors has no merge kind (only a constant operand)")
        if len(ranks) != 1:
            raise NotExact(f"{what} of tensors of different ranks {sorted(ranks)}")
        return MergeLayer(**layer_fields(entry), kind=kind)  # type: ignore[arg-type]
    if not any(flags):
        raise NotExact(f"{what} of two constants")
    position = flags.index(True)
    tensor = info[0]
    dtype = str(tensor.get("dtype") or "float32")
    if dtype not in ("float16", "float32", "float64", "bfloat16"):
        raise NotExact(f"{what} on a {dtype} tensor (weightio maps arithmetic on floats)")
    rank = len(tensor.get("shape") or ())
    raw = _constant(args[1 - position], what)
    is_map = bool(entry.input_tags) and entry.input_tags[0] == CHANNELS
    numpy_dtype = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    constant = canonical_constant(raw, rank, is_map).astype(numpy_dtype)
    return ArithmeticLayer(
        **layer_fields(entry),
        op=_ARITHMETIC[entry.class_name],  # type: ignore[arg-type]
        constant_first=position == 1,
        constant=tensors.add(entry.name, "constant", constant),
    )


@KERAS_READ.register(*_ACTIVATIONS, produces=("activation",))
def _activation(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.relu6(x)``, ``ops.hard_sigmoid(x)`` (Keras 3: ``relu6(x + 3) / 6``), ``ops.hard_silu``."""
    expect_weights(entry, 0)
    if entry.class_name == "Gelu":  # ops.gelu(x, approximate=True) is the keras.ops default
        approximate = entry.config.get("approximate", True)
        if not isinstance(approximate, bool):
            raise NotExact(f"keras.ops gelu approximate={short(approximate)}")
        return ActivationLayer(**layer_fields(entry), activation=ActivationFn(name="gelu", approximate=approximate))
    name = _ACTIVATIONS[f"{entry.module}.{entry.class_name}"]
    return ActivationLayer(**layer_fields(entry), activation=ActivationFn(name=name))  # type: ignore[arg-type]


def _axes(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise NotExact(f"{what} axis={short(value)}")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(a, int) and not isinstance(a, bool) for a in value
    ):
        return tuple(value)
    raise NotExact(f"{what} over axis {short(value)}: weightio reduces over given axes, not the batch")


def _positive(axis: int, rank: int, what: str) -> int:
    positive = axis + rank if axis < 0 else axis
    if not 0 < positive < rank:
        raise NotExact(f"{what}: axis {axis} is the batch axis or out of range for rank {rank}")
    return positive


@KERAS_READ.register(*(f"{NUMPY}.{name}" for name in _REDUCE), produces=("reduce",))
def _reduce(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.mean(x, axis=[1, 2], keepdims=True)`` and max/min/sum: axes of the form it reads."""
    expect_weights(entry, 0)
    what = f"keras.ops {entry.class_name.lower()}"
    if entry.config.get("initial") is not None or entry.config.get("where") is not None:
        raise NotExact(f"{what} with initial/where")
    rank = len(_input_shape(entry))
    axes = _axes(entry.config.get("axis"), what)
    positive = [_positive(a, rank, what) for a in axes]
    if bool(entry.input_tags) and entry.input_tags[0] == CHANNELS:
        positive = [canonical_axis(a, rank) for a in positive]
    return ReduceLayer(
        **layer_fields(entry),
        op=_REDUCE[entry.class_name],  # type: ignore[arg-type]
        axes=tuple(sorted(set(positive))),
        keepdims=bool(entry.config.get("keepdims", False)),
        input_rank=rank,
    )


def _known(shape: tuple[int | None, ...], what: str) -> tuple[int, ...]:
    if any(d is None for d in shape[1:]):
        raise NotExact(f"{what} of a tensor with a free dimension {list(shape)}")
    return tuple(int(d) for d in shape[1:])  # type: ignore[arg-type]


@KERAS_READ.register(f"{NUMPY}.Reshape", f"{NUMPY}.Squeeze", f"{NUMPY}.ExpandDims",
                     produces=("reshape",))
def _reshape(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.reshape(x, (-1, …))``, ``ops.squeeze``, ``ops.expand_dims``: row-major reshapes of
    Keras's own form, with the batch axis kept.
    """
    expect_weights(entry, 0)
    what = f"keras.ops {entry.class_name.lower()}"
    size = _known(_input_shape(entry), what)
    count = int(np.prod(size)) if size else 1
    if entry.class_name == "Reshape":
        new = entry.config.get("newshape", entry.config.get("new_shape"))
        if not isinstance(new, (list, tuple)) or not new or new[0] not in (-1, None):
            raise NotExact(f"{what} to {short(new)}: the batch axis must stay first, as -1")
        rest = list(new[1:])
        if not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in rest):
            raise NotExact(f"{what} to {short(new)}")
        if rest.count(-1) > 1:
            raise NotExact(f"{what} to {short(new)}: two free sizes")
        known = int(np.prod([d for d in rest if d != -1])) if rest else 1
        if -1 in rest:
            if known == 0 or count % known:
                raise NotExact(f"{what} to {short(new)} does not fit {list(size)}")
            rest[rest.index(-1)] = count // known
        target = tuple(rest)
    else:
        rank = len(size) + 1
        axes = _axes(entry.config.get("axis"), what)
        if entry.class_name == "Squeeze":
            drop = {_positive(a, rank, what) for a in axes}
            if any(size[a - 1] != 1 for a in drop):
                raise NotExact(f"{what} of an axis longer than 1")
            target = tuple(d for i, d in enumerate(size, start=1) if i not in drop)
        else:
            out_rank = rank + len(axes)
            where = sorted(a + out_rank if a < 0 else a for a in axes)
            if any(not 0 < a < out_rank for a in where):
                raise NotExact(f"{what}: axis {list(axes)} is the batch axis or out of range")
            dims = iter(size)
            target = tuple(1 if i in where else next(dims) for i in range(1, out_rank))
    if int(np.prod(target)) != count if target else count != 1:
        raise NotExact(f"{what} to {list(target)} does not fit {list(size)}")
    return reshape_from_keras(entry, target)


@KERAS_READ.register(f"{NUMPY}.Transpose", produces=("permute",))
def _transpose(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.transpose(x, (0, …))``: a permute of the non-batch axes of Keras's own form."""
    expect_weights(entry, 0)
    axes = entry.config.get("axes")
    rank = len(_input_shape(entry))
    if axes is None:
        raise NotExact("keras.ops transpose without axes reverses the batch axis too")
    axes = _axes(axes, "keras.ops transpose")
    axes = tuple(a + rank if a < 0 else a for a in axes)
    if len(axes) != rank or axes[0] != 0:
        raise NotExact(f"keras.ops transpose axes {list(axes)} move the batch axis")
    return permute_from_keras(entry, axes[1:])


@KERAS_READ.register(f"{NUMPY}.Concatenate", produces=("concatenate",))
def _concatenate(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.concatenate([a, b], axis)``: as the ``Concatenate`` layer."""
    ranks = {len(t.get("shape") or ()) for t in _tensor_info(entry)}
    if len(ranks) != 1:
        raise NotExact("keras.ops concatenate of tensors of different ranks")
    return read_concatenate(entry, ranks.pop())


#: The registry key of ``ops.split``, the one operation with several outputs.
SPLIT = f"{NUMPY}.Split"


@KERAS_READ.register(SPLIT, produces=("slice",))
def _split(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ops.split`` has several outputs: the model reader calls ``split_layers`` instead."""
    raise NotExact("keras.ops split is read as one slice per output (split_layers)")


def split_layers(entry: KerasLayerEntry) -> list[SliceLayer]:
    """``ops.split(x, sections or indices, axis)``: one ``slice`` per output, named
    ``part_name(split, k)``, on the axis of the form the input is in.
    """
    expect_weights(entry, 0)
    what = "keras.ops split"
    shape = _input_shape(entry)
    rank = len(shape)
    axis = _positive(single_axis(entry.config.get("axis", 0), what), rank, what)
    size = shape[axis]
    if size is None:
        raise NotExact(f"{what} along a free dimension")
    cuts = entry.config.get("indices_or_sections")
    if isinstance(cuts, int) and not isinstance(cuts, bool):
        if cuts <= 0 or size % cuts:
            raise NotExact(f"{what} of {size} into {cuts} equal sections")
        bounds = [size // cuts * k for k in range(cuts + 1)]
    elif isinstance(cuts, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) for c in cuts):
        bounds = [0, *[min(max(c + size if c < 0 else c, 0), size) for c in cuts], size]
    else:
        raise NotExact(f"{what} at {short(cuts)}")
    if bool(entry.input_tags) and entry.input_tags[0] == CHANNELS:
        axis = canonical_axis(axis, rank)
    fields = layer_fields(entry)
    return [
        SliceLayer(**{**fields, "name": part_name(entry.name, k)}, axis=axis, start=start, stop=stop)
        for k, (start, stop) in enumerate(zip(bounds, bounds[1:]))
    ]


# -- a stored value repeated over the batch (what the Keras writer makes of ``parameter``) ---------


def _history_of(arg: Any) -> str | None:
    history = (arg.get("config") or {}).get("keras_history") if is_tensor_ref(arg) else None
    return str(history[0]) if isinstance(history, (list, tuple)) and history else None


def _keras_value(value: Any) -> np.ndarray | None:
    if isinstance(value, dict) and value.get("class_name") in ("__tensor__", "__numpy__"):
        dtype = (value.get("config") or {}).get("dtype") or "float32"
        value = (value.get("config") or {}).get("value")
    elif isinstance(value, float):
        dtype = "float32"
    else:
        return None
    try:
        return np.asarray(value, dtype=np.dtype(str(dtype)))
    except (TypeError, ValueError):
        return None


def parameter_chains(layer_configs: list[Any]) -> tuple[dict[str, tuple[dict[str, Any], np.ndarray]], set[str]]:
    """Find ``x[:, 0, …, 0]`` → ``zeros_like`` → (``Reshape`` to ones) → ``+ value``: the
    ``parameter`` kind as its Keras writer spells it (a value repeated over the batch of ``x``).

    Returns each chain's last layer name -> (the ``GetItem`` layer, the value), and the names of
    the layers inside the chains, which are read as part of it. Only a chain whose inner layers
    feed nothing else is folded; anything else is read layer by layer.
    """
    by_name = {str(raw.get("name")): raw for raw in layer_configs if isinstance(raw, dict)}
    consumers: dict[str, list[str]] = {}
    for name, raw in by_name.items():
        for node in raw.get("inbound_nodes") or []:
            args = node.get("args", []) if isinstance(node, dict) else []
            for arg in _flatten_args(args):
                source = _history_of(arg)
                if source is not None:
                    consumers.setdefault(source, []).append(name)

    def single_user(name: str, class_name: str) -> dict[str, Any] | None:
        users = consumers.get(name, [])
        user = by_name.get(users[0]) if len(users) == 1 else None
        return user if user is not None and user.get("class_name") == class_name else None

    chains: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
    inner: set[str] = set()
    for name, raw in by_name.items():
        if raw.get("class_name") != "GetItem" or raw.get("module") != NUMPY:
            continue
        args = node_arguments(raw)
        key = args[1] if len(args) == 2 else None
        if not (isinstance(key, (list, tuple)) and len(key) >= 2 and isinstance(key[0], dict)
                and key[0].get("class_name") == "__slice__"
                and all(k == 0 and not isinstance(k, bool) for k in key[1:])):
            continue
        zeros = single_user(name, "ZerosLike")
        if zeros is None:
            continue
        step, chain = zeros, [name, str(zeros.get("name"))]
        reshape = single_user(chain[-1], "Reshape")
        if reshape is not None:
            target = (reshape.get("config") or {}).get("target_shape")
            if not isinstance(target, (list, tuple)) or any(d != 1 for d in target):
                continue
            step = reshape
            chain.append(str(reshape.get("name")))
        add = single_user(str(step.get("name")), "Add")
        add_args = node_arguments(add) if add is not None else []
        if add is None or add.get("module") != NUMPY or len(add_args) != 2 or _history_of(add_args[0]) != chain[-1]:
            continue
        value = _keras_value(add_args[1])
        target_rank = len((reshape.get("config") or {}).get("target_shape")) if reshape is not None else 0
        if value is None or value.ndim != target_rank or value.dtype.kind != "f":
            continue
        chains[str(add.get("name"))] = (raw, value)
        inner.update(chain)
    return chains, inner


def _flatten_args(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [item for part in value for item in _flatten_args(part)]
    return [value]


def parameter_layer(name: str, inputs: list[str] | None, value: np.ndarray, tensors: TensorCollector) -> LayerBase:
    """The ``parameter`` layer a chain found by ``parameter_chains`` stands for."""
    return ParameterLayer(name=name, inputs=inputs, source_class="keras.ops zeros_like + value",
                          value=tensors.add(name, "value", value))
