"""Core spec kinds -> PyTorch modules: dense, activation, dropout, identity, affine, rescaling,
binary_proba.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import (
    numpy_to_tensor,
    torch_dtype_for,
    torch_module,
)
from weightio.frameworks.torch.write import quantized
from weightio.frameworks.torch.write.base import (
    TORCH_WRITE,
    ModuleClasses,
    activation_module,
    flowing_float_dtype,
    parameter,
    weight_norm_form,
)
from weightio.spec.dtypes import numpy_dtype

#: Weightio's own modules for the core kinds torch.nn lacks (see ``base.ModuleClasses``).
MODULES = ModuleClasses(__name__)


def __getattr__(name: str) -> Any:
    return MODULES.attribute(name)


@MODULES.define("Affine")
def _affine_class(nn: Any) -> type:
    class Affine(nn.Module):
        """Elementwise ``y = x * scale + offset`` over the last axis (spec kind ``affine``).

        ``scale`` and ``offset`` are trainable parameters of shape ``[features]``. Unlike a
        ``BatchNorm1d`` in disguise it computes the same thing in ``train()`` and ``eval()``.
        """

        def __init__(self, scale: Any, offset: Any) -> None:
            super().__init__()
            self.features = int(scale.shape[0])
            requires_grad = scale.is_floating_point()
            self.scale = nn.Parameter(scale, requires_grad=requires_grad)
            self.offset = nn.Parameter(offset, requires_grad=requires_grad)

        def forward(self, x: Any) -> Any:
            """``x * scale + offset``, per feature on the last axis."""
            return x * self.scale + self.offset

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return f"features={self.features}"

    return Affine


@MODULES.define("Rescaling")
def _rescaling_class(nn: Any) -> type:
    class Rescaling(nn.Module):
        """``y = x * scale + offset`` with one value, or one per index of ``axis`` (spec kind
        ``rescaling``, Keras's ``Rescaling``).

        ``scale`` and ``offset`` are constants, not parameters (Keras keeps them in its config):
        non-persistent buffers, already in the compute dtype and shaped to broadcast along
        ``axis``, so they follow ``.to(device)`` and stay out of the state dict.
        """

        def __init__(self, scale: Any, offset: Any, axis: int, size: int) -> None:
            super().__init__()
            self.axis, self.size = axis, size
            self.register_buffer("scale", scale, persistent=False)
            self.register_buffer("offset", offset, persistent=False)

        def forward(self, x: Any) -> Any:
            """``x * scale + offset``."""
            return x * self.scale + self.offset

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return f"size={self.size}, axis={self.axis}" if self.size > 1 else f"scale={float(self.scale)}"

    return Rescaling


@TORCH_WRITE.register("dense")
def _dense(layer: Any, archive: Archive) -> list[Any]:
    torch = torch_module("building PyTorch modules")
    if quantized.kept_encoding(layer) is not None:  # to_torch(keep_int8=True)
        kept = quantized.int8_buffers(layer, archive)
        linear = quantized.MODULES.get("QuantizedLinear")(
            kept["weight_int8"], kept["scale"], kept["zero_point"], kept["axis"], kept["dtype"],
            quantized.bias_parameter(layer, archive),
        )
        return [linear, *([] if layer.activation.name == "linear" else
                          [activation_module(layer.activation, layer=layer.name)])]
    weight = archive.tensor(layer.name, "weight")
    # Built on the meta device: no random init to throw away, and any float dtype works.
    linear = torch.nn.Linear(
        layer.in_features, layer.units, bias=layer.use_bias, device="meta",
        dtype=torch_dtype_for(weight.dtype),
    )
    linear.weight = parameter(weight)
    if layer.use_bias:
        linear.bias = parameter(archive.tensor(layer.name, "bias"))
    modules = [weight_norm_form(linear, layer, archive)]
    if layer.activation.name != "linear":
        modules.append(activation_module(layer.activation, layer=layer.name))
    return modules


@TORCH_WRITE.register("activation")
def _activation(layer: Any, archive: Archive) -> list[Any]:
    return [activation_module(layer.activation, layer=layer.name)]


@TORCH_WRITE.register("dropout")
def _dropout(layer: Any, archive: Archive) -> list[Any]:
    return [torch_module("building PyTorch modules").nn.Dropout(p=layer.rate)]


@TORCH_WRITE.register("identity")
def _identity(layer: Any, archive: Archive) -> list[Any]:
    return [torch_module("building PyTorch modules").nn.Identity()]


@TORCH_WRITE.register("affine")
def _affine(layer: Any, archive: Archive) -> list[Any]:
    """Weightio's ``Affine`` module: ``x * scale + offset``, exact in train and eval mode."""
    scale = numpy_to_tensor(np.array(archive.tensor(layer.name, "scale")))
    offset = numpy_to_tensor(np.array(archive.tensor(layer.name, "offset")))
    return [MODULES.get("Affine")(scale, offset)]


@TORCH_WRITE.register("rescaling")
def _rescaling(layer: Any, archive: Archive) -> list[Any]:
    """Weightio's ``Rescaling`` module; vectors laid along the canonical axis (channels first).

    A per-channel rescaling needs the input's rank to lay its vector out; it is known from the
    spec (``layouts.flow``) for feature maps, and the last axis needs none.
    """
    torch = torch_module("building PyTorch modules")
    dtype = torch_dtype_for(numpy_dtype(layer.dtype))
    shape: tuple[int, ...] = ()
    if layer.size > 1 and layer.axis != -1:
        rank = rank_of_input(archive, layer)
        if rank is None:
            raise UnsupportedLayerError(
                f"a per-channel rescaling on axis {layer.axis} of an input of unknown rank",
                layer=layer.name,
            )
        axis = layer.axis if layer.axis > 0 else layer.axis + rank
        shape = (layer.size, *([1] * (rank - 1 - axis)))

    def laid(values: tuple[float, ...]) -> Any:
        tensor = torch.tensor(values, dtype=torch.float64).to(dtype)
        if len(values) == 1:
            return tensor.reshape(())
        return tensor.reshape(shape or (layer.size,))

    module = MODULES.get("Rescaling")(laid(layer.scale), laid(layer.offset), layer.axis, layer.size)
    return [module]


def rank_of_input(archive: Archive, layer: Any) -> int | None:
    """The rank (batch included) of the tensor ``layer`` reads, where the spec fixes it."""
    from weightio.layouts.flow import tensor_ranks

    spec = archive.spec
    index = next(i for i, other in enumerate(spec.layers) if other.name == layer.name)
    return tensor_ranks(spec).get(spec.layer_inputs(index)[0])


@TORCH_WRITE.register("binary_proba")
def _binary_proba(layer: Any, archive: Archive) -> list[Any]:
    """``[1 - p, p]`` as a frozen ``nn.Linear(1, 2)``: weight ``[[-1], [1]]``, bias ``[1, 0]``.

    With one input feature each output is one exact product (by +-1) plus the bias: exactly
    ``1 - p`` and ``p``. The parameters are frozen so fine-tuning cannot change the meaning.
    """
    torch = torch_module("building PyTorch modules")
    dtype = flowing_float_dtype(archive, layer.name)
    linear = torch.nn.Linear(1, 2, bias=True, device="meta", dtype=dtype)
    linear.weight = torch.nn.Parameter(
        torch.tensor([[-1.0], [1.0]], dtype=dtype), requires_grad=False
    )
    linear.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=dtype), requires_grad=False)
    return [linear]


@TORCH_WRITE.register("opaque")
def _opaque(layer: Any, archive: Archive) -> list[Any]:
    why = f"; {layer.reason}" if layer.reason else ""
    raise UnsupportedLayerError(
        f"is kept as opaque ({layer.source_class or 'unknown source class'}{why}): weightio does "
        "not know what it computes, so it cannot build it. The archive can still be inspected and "
        "diffed; to run it, build the model in PyTorch and copy the weights in with "
        "weightio.load_into(archive, model)",
        layer=layer.name,
    )
