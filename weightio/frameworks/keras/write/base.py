"""The Keras writer's registry, the data every mapping returns, and the context it reads.

One mapping per spec kind (registered in ``KERAS_WRITE``) turns a spec layer into the Keras
layers computing it, as *data*: a ``KerasLayer`` is a layer's serialized config (what
``config.json`` holds), its arrays in ``layer.weights`` order, the shape it outputs and how its
variables nest in ``model.weights.h5``. Nothing here imports Keras, so the same mappings feed
the live back end (``build.to_keras``: Keras deserializes the config and takes the arrays) and
the file back end (``files.writer``: h5py writes the arrays), and both cover the same kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.keras.activations import KERAS_ACTIVATIONS
from weightio.frameworks.keras.write.serialized import Shape, layer_config
from weightio.registry import Registry
from weightio.spec.activations import ActivationFn
from weightio.spec.base import LayerBase

#: safetensors dtype name -> Keras dtype string (floating types a Keras layer can compute in).
KERAS_FLOAT = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
KERAS_ANY = {
    **KERAS_FLOAT,
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}


def keras_numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of a Keras float dtype name (bfloat16 from ml_dtypes, as Keras uses)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


@dataclass(frozen=True)
class VariableGroup:
    """One saveable in ``model.weights.h5``: its ``vars`` group and the saveables nested in it.

    Keras 3 stores a layer's own variables as ``<path>/vars/0, 1…`` (the group marked with the
    layer's ``name``) and each layer it tracks as ``<path>/<attribute>/…``: ``cell`` of an RNN,
    ``forward_layer``/``backward_layer`` of ``Bidirectional``, ``query_dense``… of
    ``MultiHeadAttention``. ``arrays`` index into the owning ``KerasLayer.weights``.
    """

    name: str
    arrays: tuple[int, ...] = ()
    children: tuple[tuple[str, VariableGroup], ...] = ()


#: How a layer's inbound node passes its inputs: one tensor, a list (merges), ``(query, value)``
#: (self-attention, both the same tensor), ``query_value_mask`` (the same, with the second input
#: as ``value_mask=``), or ``args``: the arguments ``KerasLayer.call_args``
#: lists, with ``INPUT`` where the input tensor goes (a Keras operation with constants, such as
#: ``GetItem(x, [:, -1])`` or ``Divide(x, 6.0)``).
CallStyle = Literal["tensor", "list", "query_value", "query_value_mask", "args"]

#: Stands for the input tensor among an operation's ``call_args``.
INPUT = "__weightio_input__"

#: The module of Keras operations that are not layers (they hold no weights group).
OPERATIONS_MODULE = "keras.src.ops.numpy"
#: Every module of Keras operations (``Cast`` lives in ``ops.core``).
OPERATION_MODULES = (OPERATIONS_MODULE, "keras.src.ops.core")


@dataclass
class KerasLayer:
    """One Keras layer as plain data: its serialized form, arrays, output shape and nesting."""

    class_name: str
    #: The layer's ``config`` as Keras 3 serializes it (JSON data).
    config: dict[str, Any]
    #: Output shape without the batch axis, as Keras holds it (channels-last feature maps).
    output_shape: Shape
    #: The arrays ``layer.set_weights`` takes, in ``layer.weights`` order.
    weights: list[np.ndarray] = field(default_factory=list)
    #: ``build_config`` (the input shape the layer is built with), None where Keras records none.
    build: dict[str, Any] | None = None
    module: str = "keras.layers"
    registered_name: str | None = None
    call: CallStyle = "tensor"
    #: Keyword arguments Keras records for the call (``training``, ``mask``) in a Functional model.
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    #: With ``call="args"``: the call's positional arguments, ``INPUT`` for the input tensor.
    call_args: list[Any] = field(default_factory=list)
    #: Variables nested in tracked sublayers; None when every weight is the layer's own.
    nested: tuple[tuple[str, VariableGroup], ...] | None = None
    #: The output's dtype where no policy in the config gives it (an operation's).
    output_dtype: str | None = None

    @property
    def name(self) -> str:
        """The layer's (unique) Keras name."""
        return str(self.config["name"])

    @property
    def dtype(self) -> str:
        """The dtype the layer outputs: its policy's (an InputLayer's own, an op's input's)."""
        if self.output_dtype is not None:
            return self.output_dtype
        value = self.config.get("dtype", "float32")
        return str(value["config"]["name"]) if isinstance(value, dict) else str(value)

    @property
    def needs_functional(self) -> bool:
        """True for what a Sequential cannot hold: an operation, or a call of more than ``x``."""
        return not self.is_layer or self.call != "tensor"

    @property
    def is_layer(self) -> bool:
        """False for a Keras operation (``GetItem``): not in ``model.layers``, no weights group."""
        return self.module not in OPERATION_MODULES

    def variables(self) -> VariableGroup:
        """The layer's group of ``model.weights.h5``: its own arrays, then nested saveables."""
        if self.nested is None:
            return VariableGroup(self.name, tuple(range(len(self.weights))))
        return VariableGroup(self.name, (), self.nested)

    def serialized(self) -> dict[str, Any]:
        """The layer's entry in a model's ``layers`` list (without Functional wiring)."""
        entry: dict[str, Any] = {
            "module": self.module,
            "class_name": self.class_name,
            "config": self.config,
            "registered_name": self.registered_name,
        }
        if self.build is not None:
            entry["build_config"] = self.build
        return entry


@dataclass(frozen=True)
class KerasSettings:
    """Global Keras settings some layers compute with, though their config does not hold them.

    The live back end passes the running Keras's; a ``.keras`` written without Keras is read with
    Keras's defaults, which these are.
    """

    epsilon: float = 1e-7
    image_data_format: str = "channels_last"


@dataclass
class NameAllocator:
    """Keras layer names: the spec's where Keras accepts them, unique, chosen deterministically.

    Keras 3 rejects only ``/`` in names (the spec already forbids it); it is replaced by ``_``
    defensively. Names the spec uses are reserved first so an inserted activation layer never
    takes a later layer's name.
    """

    used: set[str] = field(default_factory=set)
    by_spec: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def clean(name: str) -> str:
        """Replace the characters Keras rejects."""
        return name.replace("/", "_") or "layer"

    def reserve(self, spec_name: str) -> str:
        """Give ``spec_name`` its Keras name (itself when valid and free)."""
        name = self.fresh(self.clean(spec_name))
        self.by_spec[spec_name] = name
        return name

    def fresh(self, base: str) -> str:
        """Return ``base``, or ``base_1``, ``base_2``… whichever is free, and mark it used.

        ``base`` is cleaned too: a layer a mapping inserts is named after its spec layer
        (``inner/flatten`` -> ``inner_flatten_permute``), and Keras refuses a ``/``.
        """
        base = self.clean(base)
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


@dataclass
class WriteContext:
    """What a mapping needs besides its layer: the archive, names, and the tensor flowing in."""

    archive: Archive
    #: The float dtype layers without parameters compute in; mappings with parameters set it.
    dtype: str
    names: NameAllocator
    #: Keras shapes (no batch axis) of the layer's input tensors; ``shape`` is the first.
    shapes: list[Shape]
    #: Form of the flowing tensor: "channels" (a channels-last feature map) or "plain".
    layout: str = "plain"
    settings: KerasSettings = field(default_factory=KerasSettings)

    @property
    def shape(self) -> Shape:
        """The Keras shape of the (first) input tensor."""
        return self.shapes[0]

    def name_of(self, layer: LayerBase) -> str:
        """The Keras name reserved for a spec layer."""
        return self.names.by_spec[layer.name]


WriteFn = Callable[[LayerBase, WriteContext], list[KerasLayer]]

#: Spec kind -> function returning the Keras layers (applied in order) computing that layer.
KERAS_WRITE: Registry[WriteFn] = Registry("keras", "write")


def keras_activation_name(fn: ActivationFn) -> str | None:
    """The Keras activation string computing ``fn`` with Keras's defaults, or None."""
    for name, known in KERAS_ACTIVATIONS.items():
        if known == fn:
            return name
    return None


def same_shape_layer(class_name: str, name: str, dtype: str, shape: Shape, **fields: Any) -> KerasLayer:
    """A parameter-free layer whose output has its input's shape (activation, dropout…)."""
    return KerasLayer(class_name, layer_config(name, dtype, **fields), shape)


def standalone_activation(
    fn: ActivationFn, *, name: str, dtype: str, shape: Shape, layer: str
) -> KerasLayer:
    """An exact Keras layer computing ``fn``; refuse where Keras 3 has none."""
    as_string = keras_activation_name(fn)
    if as_string is not None:
        return same_shape_layer("Activation", name, dtype, shape, activation=as_string)
    if fn.name == "leaky_relu" and fn.negative_slope is not None and fn.negative_slope >= 0:
        return same_shape_layer("LeakyReLU", name, dtype, shape, negative_slope=fn.negative_slope)
    if fn.name == "elu":
        return same_shape_layer("ELU", name, dtype, shape, alpha=fn.alpha)
    if fn.name == "gelu" and fn.approximate:  # no layer or string: the keras.ops call
        return KerasLayer("Gelu", {"name": name, "approximate": True}, shape, module="keras.src.ops.nn",
                          registered_name="Gelu", call="args", call_args=[INPUT], output_dtype=dtype)
    if fn.name == "softmax":
        softmax = same_shape_layer("Softmax", name, dtype, shape, axis=fn.axis)
        softmax.call_kwargs = {"mask": None}
        return softmax
    raise UnsupportedLayerError(
        f"activation {fn.describe()} has no exact Keras equivalent (Keras offers it only with "
        "its default parameters); weightio does not approximate",
        layer=layer,
    )


def layer_array(ctx: WriteContext, ref: Any) -> np.ndarray:
    """The archive array a parameter reference names (memory-mapped, read when touched)."""
    return np.asarray(ctx.archive.tensors[ref.key])
