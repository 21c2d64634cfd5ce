"""The PyTorch reader registry, the context every reader receives, and argument binding."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import tensor_ref
from weightio.frameworks.torch.common import tensor_to_numpy, torch_dtype_name
from weightio.registry import Registry
from weightio.spec.base import LayerBase
from weightio.spec.tensors import TensorEncoding, TensorRef

#: A reader: ``(call, ctx) -> spec layer``. ``call`` is the module for ``call_module`` nodes
#: and the bound arguments (a dict, every parameter explicit) for functions and methods. A
#: reader may return a list of layers (a composition), the last one named ``ctx.layer_name``.
ReadFn = Callable[[Any, "ReadContext"], "LayerBase | list[LayerBase]"]

TORCH_READ: Registry[ReadFn] = Registry("torch", "read")

REQUIRED = object()
"""Marks a function parameter that has no default."""

#: Parameters that change how, not what, a function computes.
IGNORED_PARAMETERS = frozenset({"inplace", "_stacklevel"})


@dataclass(frozen=True)
class StoredTensor:
    """A parameter or buffer the forward reads directly (``self.layer_scale * x``, the weight of
    ``F.layer_norm``), under its state-dict key: what a reader receives in place of the fx
    ``get_attr`` node.
    """

    key: str
    value: Any


#: Function keys whose readers take ``StoredTensor`` arguments (the graph check lets a
#: ``get_attr`` through only into these).
PARAMETER_KEYS: set[str] = set()


@dataclass
class ReadContext:
    """What a reader needs about the node it converts, and where it puts tensors."""

    layer_name: str
    inputs: list[str]
    source: str
    input_rank: int | None
    module_path: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: The data input's shape with batch, from shape propagation (None when unknown).
    input_shape: tuple[int, ...] | None = None
    #: The data argument as the reader's other arguments see it (a ``StoredTensor`` when the
    #: forward reads a parameter first: ``self.layer_scale * x``).
    data: Any = None
    #: Shared by every node of one read: the key each torch tensor was first stored under
    #: (``tensor_identity``), and each further state-dict key of a tensor stored already.
    stored: dict[tuple, str] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    #: Reserves a fresh layer name (for a reader returning several layers, the last one the
    #: node's output under ``layer_name``).
    fresh: Callable[[str], str] | None = None
    #: What graph passes recorded on the node (``torch.fx`` ``node.meta``).
    node_meta: Mapping[str, Any] = field(default_factory=dict)

    def fresh_name(self, suffix: str) -> str:
        """A unique name for an extra layer of this node: ``<layer_name>_<suffix>``."""
        wanted = f"{self.layer_name}_{suffix}"
        return self.fresh(wanted) if self.fresh else wanted

    def tensor(self, param: str, value: Any) -> TensorRef:
        """Store a module's tensor under its state-dict key ``<module path>.<param>``.

        A tensor stored already (a module called twice, or a parameter tied between modules:
        ``head.weight = emb.weight``) is referenced under its first key again, so the archive
        holds it once and every layer reading it names the same key.
        """
        key = f"{self.module_path}.{param}" if self.module_path else param
        identity = tensor_identity(value)
        first = self.stored.setdefault(identity, key) if identity is not None else key
        if first != key:
            self.tied[key] = first
            return tensor_ref(first, self.arrays[first])
        array = tensor_to_numpy(value, key=key)
        self.arrays[key] = array
        return tensor_ref(key, array)

    def base(self) -> dict[str, Any]:
        """The fields every layer takes: name, wiring and source."""
        return {"name": self.layer_name, "inputs": self.inputs, "source_class": self.source}

    def refuse(self, message: str) -> UnsupportedLayerError:
        """An error naming this layer and its torch source."""
        return UnsupportedLayerError(f"{self.source}: {message}", layer=self.layer_name)


def int8_weight(module: Any, ctx: ReadContext) -> TensorRef:
    """The weight of weightio's ``QuantizedLinear``/``QuantizedConv`` (``to_torch(...,
    keep_int8=True)``) as the encoded parameter it came from (format 1.2): the integers under
    ``<path>.weight``, the scale and zero point under ``<path>.weight.scale`` / ``.zero_point``.
    """
    q = ctx.tensor("weight", module.weight_int8)
    zero = module.zero_point
    encoding = TensorEncoding(
        stored_dtype=q.dtype, axis=module.axis, scale=ctx.tensor("weight.scale", module.scale),
        zero_point=None if zero is None else ctx.tensor("weight.zero_point", zero),
    )
    return q.model_copy(update={"dtype": torch_dtype_name(module.compute_dtype), "encoding": encoding})


#: The module path torch gives the classes ``torch.nn.utils.parametrize`` makes for a
#: parametrized module (``ParametrizedLinear``, ``ParametrizedConv2d``).
PARAMETRIZED = "torch.nn.utils.parametrize.Parametrized"


def module_weight(module: Any, ctx: ReadContext) -> TensorRef:
    """A Linear/Conv module's ``weight``; under torch's ``parametrizations.weight_norm`` (its one
    parametrization of ``weight``) the weight-norm form it holds (format 1.2 encoding
    ``weight_norm``): ``v`` (``original1``) under ``<path>.weight``, ``g`` (``original0``, one
    value per index of its ``dim``, or a scalar) under ``<path>.weight.g``. Any other
    parametrization is read as the weight it computes.
    """
    parametrizations = getattr(module, "parametrizations", None)
    chain = None if parametrizations is None else getattr(parametrizations, "weight", None)
    if chain is None or len(chain) != 1 or type(chain[0]).__name__ != "_WeightNorm":
        return ctx.tensor("weight", module.weight)
    dim = int(chain[0].dim)
    g, v = chain.original0.detach(), chain.original1.detach()
    axis = None if dim == -1 else dim % v.dim()
    if g.dtype != v.dtype or g.numel() != (1 if axis is None else v.shape[axis]):
        return ctx.tensor("weight", module.weight)
    direction = ctx.tensor("weight", v)
    magnitude = ctx.tensor("weight.g", g.reshape(() if axis is None else (-1,)))
    encoding = TensorEncoding(scheme="weight_norm", stored_dtype=direction.dtype, axis=axis,
                              scale=magnitude)
    return direction.model_copy(update={"encoding": encoding})


def tensor_identity(value: Any) -> tuple | None:
    """What makes two torch tensors the same one: storage, offset, shape, strides and dtype."""
    try:
        storage = value.untyped_storage().data_ptr()
    except (AttributeError, RuntimeError):
        return None
    if not storage or value.numel() == 0:
        return None  # empty tensors may all sit at address 0: never taken for one tensor
    return (storage, int(value.storage_offset()), tuple(value.shape), tuple(value.stride()),
            str(value.dtype))


FUNCTION_PARAMETERS: dict[str, tuple[tuple[str, Any], ...]] = {
    "torch.nn.functional.dropout": (("p", 0.5), ("training", True), ("inplace", False)),
}
"""Each function's parameters after the input tensor, in positional order, with defaults."""


def bind_arguments(
    key: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], ctx_name: str
) -> dict[str, Any]:
    """Bind a call's arguments after the input tensor, filling in the function's defaults.

    Raises:
        UnsupportedLayerError: an unknown keyword, too many positionals, or a missing argument.
    """
    table = FUNCTION_PARAMETERS[key]
    names = [name for name, _ in table]
    if len(args) > len(table):
        raise UnsupportedLayerError(
            f"{key} takes at most {len(table) + 1} positional arguments; got {len(args) + 1}",
            layer=ctx_name,
        )
    bound = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names or name in bound:
            raise UnsupportedLayerError(
                f"{key}: unexpected or repeated argument {name!r}; known: {', '.join(names)}",
                layer=ctx_name,
            )
        bound[name] = value
    for name, default in table:
        if name not in bound:
            if default is REQUIRED:
                raise UnsupportedLayerError(f"{key}: argument {name!r} is missing", layer=ctx_name)
            bound[name] = default
    return bound
