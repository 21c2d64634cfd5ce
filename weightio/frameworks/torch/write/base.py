"""The PyTorch writer registry, and what every family writer needs: activations, parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import numpy_to_tensor, torch_dtype_for, torch_module
from weightio.registry import Registry
from weightio.spec.activations import ActivationFn
from weightio.spec.base import LayerBase

#: A writer: ``(layer, archive) -> modules`` computing the layer, applied in order.
WriteFn = Callable[[Any, Archive], list[Any]]

TORCH_WRITE: Registry[WriteFn] = Registry("torch", "write")


def activation_module(fn: ActivationFn, *, layer: str) -> Any:
    """The torch module computing ``fn``, with every parameter set explicitly."""
    nn = torch_module("building PyTorch modules").nn
    makers: dict[str, Callable[[], Any]] = {
        "linear": nn.Identity,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope=fn.negative_slope),
        "elu": lambda: nn.ELU(alpha=fn.alpha),
        "celu": lambda: nn.CELU(alpha=fn.alpha),
        "selu": nn.SELU,
        "gelu": lambda: nn.GELU(approximate="tanh" if fn.approximate else "none"),
        "sigmoid": nn.Sigmoid,
        "log_sigmoid": nn.LogSigmoid,
        "hard_sigmoid": nn.Hardsigmoid,
        "tanh": nn.Tanh,
        "hard_tanh": lambda: nn.Hardtanh(min_val=-1.0, max_val=1.0),
        "softmax": lambda: nn.Softmax(dim=fn.axis),
        "log_softmax": lambda: nn.LogSoftmax(dim=fn.axis),
        "softplus": lambda: nn.Softplus(beta=1.0, threshold=20.0),
        "softsign": nn.Softsign,
        "silu": nn.SiLU,
        "hard_silu": nn.Hardswish,
        "mish": nn.Mish,
        "tanh_shrink": nn.Tanhshrink,
        "soft_shrink": lambda: nn.Softshrink(lambd=fn.threshold),
        "hard_shrink": lambda: nn.Hardshrink(lambd=fn.threshold),
    }
    maker = makers.get(fn.name)
    if maker is None:
        raise UnsupportedLayerError(
            f"activation {fn.describe()} has no PyTorch module mapping", layer=layer
        )
    return maker()


def parameter(array: np.ndarray) -> Any:
    """An ``nn.Parameter`` holding ``array`` bit-exactly (in its own dtype)."""
    torch = torch_module("building PyTorch modules")
    tensor = numpy_to_tensor(array)
    return torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point())


def flowing_float_dtype(archive: Archive, layer_name: str) -> Any:
    """The float dtype reaching ``layer_name``: that of the nearest parameter before it."""
    torch = torch_module("building PyTorch modules")
    dtype = None
    for layer in archive.spec.layers:
        if layer.name == layer_name:
            break
        for ref in layer.tensor_refs().values():
            if ref.dtype in ("F16", "BF16", "F32", "F64"):
                dtype = ref.dtype
    if dtype is None:
        dtype = next((i.dtype for i in archive.spec.inputs if i.dtype.startswith(("F", "BF"))), "F32")
    return {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}[
        dtype
    ]


def torch_nn() -> Any:
    """``torch.nn``, imported on first use."""
    return torch_module("building PyTorch modules").nn


def load_parameters(
    module: Any,
    archive: Archive,
    layer: LayerBase,
    names: dict[str, str],
    fill: dict[str, np.ndarray] | None = None,
) -> Any:
    """Load ``names`` (module attribute -> canonical param) and ``fill`` exact constants."""
    state = {
        attr: numpy_to_tensor(np.asarray(archive.tensors[layer.tensor_refs()[param].key]))
        for attr, param in names.items()
    }
    state.update({attr: numpy_to_tensor(value) for attr, value in (fill or {}).items()})
    missing, unexpected = module.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.endswith("num_batches_tracked")]
    if left or unexpected:
        raise UnsupportedLayerError(
            f"internal: parameters {left or unexpected} do not fit {type(module).__name__}",
            layer=layer.name,
        )
    return module.eval()


def layer_dtype(archive: Archive, layer: LayerBase) -> Any:
    """The torch dtype of the layer's first parameter (what its module computes in)."""
    ref = next(iter(layer.tensor_refs().values()))
    return torch_dtype_for(np.asarray(archive.tensors[ref.key]).dtype)


class ModuleClasses:
    """Weightio's own ``nn.Module`` classes for the kinds of one family module.

    A kind ``torch.nn`` has no module for gets one of weightio's, defined beside its writer so
    that adding a kind stays within its family's files. The classes are built on first use
    (torch is imported only then) and are reachable as attributes of their family module
    (``weightio.frameworks.torch.write.core.Affine``) through that module's ``__getattr__``,
    so pickling and ``print(module)`` name them properly, and the reader knows them by that
    qualified name.
    """

    def __init__(self, home: str) -> None:
        self.home = home
        self.definitions: dict[str, Callable[[Any], type]] = {}
        self.classes: dict[str, type] = {}

    def define(self, name: str) -> Callable[[Callable[[Any], type]], Callable[[Any], type]]:
        """Register the decorated ``definition(nn) -> class`` as class ``name``."""

        def register(definition: Callable[[Any], type]) -> Callable[[Any], type]:
            if name in self.definitions:
                raise RuntimeError(f"module class {name!r} is defined twice in {self.home}")
            self.definitions[name] = definition
            return definition

        return register

    def get(self, name: str) -> type:
        """The class ``name``, defined (importing torch) on first use."""
        cls = self.classes.get(name)
        if cls is None:
            cls = self.definitions[name](torch_nn())
            cls.__module__ = self.home
            cls.__qualname__ = name
            self.classes[name] = cls
        return cls

    def attribute(self, name: str) -> type:
        """For the family module's ``__getattr__``: the class, or ``AttributeError``."""
        if name in self.definitions:
            return self.get(name)
        raise AttributeError(f"module {self.home!r} has no attribute {name!r}")


def weight_norm_form(module: Any, layer: LayerBase, archive: Archive, param: str = "weight") -> Any:
    """``module`` with torch's weight-norm parametrization on ``param`` when the archive holds
    that parameter in weight-norm form (encoding scheme ``weight_norm``, ``weightio.weight_norm``):
    ``parametrizations.weight.original0`` is ``g`` (shaped as torch keeps it: ``[out, 1, …]``,
    or ``[]`` over the whole tensor) and ``original1`` is ``v``, both as stored, so the module
    computes ``g * v / ||v||`` as torch does; else ``module`` unchanged.
    """
    ref = layer.tensor_refs()[param]
    encoding = ref.encoding
    if encoding is None or encoding.scheme != "weight_norm":
        return module
    torch = torch_module("building PyTorch modules")
    g = numpy_to_tensor(np.array(archive.stored[encoding.scale.key]))
    v = numpy_to_tensor(np.array(archive.stored[ref.key]))
    axis = encoding.axis
    module = torch.nn.utils.parametrizations.weight_norm(module, name=param, dim=axis)
    shape = [1] * v.dim()
    if axis is not None:
        shape[axis] = v.shape[axis]
    parametrized = getattr(module.parametrizations, param)
    with torch.no_grad():
        parametrized.original0.copy_(g.reshape(shape) if axis is not None else g.reshape(()))
        parametrized.original1.copy_(v)
    return module
