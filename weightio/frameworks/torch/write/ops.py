"""Tensor-operation spec kinds -> PyTorch modules: reductions, slices, arithmetic with a stored
constant, stored tensors used directly, dtype casts.

torch has functions for these but no modules, so each is one of weightio's small modules
(``base.ModuleClasses``): a chain stays an ``nn.Sequential``, ``print(model)`` shows what each
step does, and the constants and stored values are the module's own tensors, in their dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.format.archive import Archive
from weightio.frameworks.torch.common import numpy_to_tensor, torch_dtype_for, torch_module
from weightio.frameworks.torch.write.base import TORCH_WRITE, ModuleClasses
from weightio.spec.dtypes import numpy_dtype

#: Weightio's own modules for the tensor operations (see ``base.ModuleClasses``).
MODULES = ModuleClasses(__name__)


def __getattr__(name: str) -> Any:
    return MODULES.attribute(name)


@MODULES.define("Reduce")
def _reduce_class(nn: Any) -> type:
    class Reduce(nn.Module):
        """``mean``/``max``/``min``/``sum`` over ``axes`` (spec kind ``reduce``)."""

        def __init__(self, op: str, axes: tuple[int, ...], keepdims: bool) -> None:
            super().__init__()
            self.op, self.axes, self.keepdims = op, tuple(axes), keepdims

        def forward(self, x: Any) -> Any:
            """The reduction; ``amax``/``amin`` for max and min (values only, every axis)."""
            import torch

            fn = {"mean": torch.mean, "sum": torch.sum, "max": torch.amax, "min": torch.amin}
            return fn[self.op](x, dim=self.axes, keepdim=self.keepdims)

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return f"op={self.op}, axes={self.axes}, keepdims={self.keepdims}"

    return Reduce


@MODULES.define("Slice")
def _slice_class(nn: Any) -> type:
    class Slice(nn.Module):
        """``x[..., start:stop:step, ...]`` on ``axis`` (spec kind ``slice``)."""

        def __init__(self, axis: int, start: int, stop: int | None, step: int) -> None:
            super().__init__()
            self.axis, self.start, self.stop, self.step = axis, start, stop, step

        def forward(self, x: Any) -> Any:
            """The slice (a view)."""
            index = [slice(None)] * x.dim()
            index[self.axis] = slice(self.start, self.stop, self.step)
            return x[tuple(index)]

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return f"axis={self.axis}, start={self.start}, stop={self.stop}, step={self.step}"

    return Slice


@MODULES.define("Arithmetic")
def _arithmetic_class(nn: Any) -> type:
    class Arithmetic(nn.Module):
        """``x op c`` or ``c op x`` with a stored constant (spec kind ``arithmetic``).

        The constant is an ``nn.Parameter`` when it was learned (a layer scale, a position
        embedding), else a buffer; either way it is in the state dict, in its own dtype.
        """

        def __init__(self, op: str, constant: Any, constant_first: bool, learned: bool) -> None:
            super().__init__()
            self.op, self.constant_first = op, constant_first
            if learned:
                self.constant = nn.Parameter(constant, requires_grad=constant.is_floating_point())
            else:
                self.register_buffer("constant", constant)

        def forward(self, x: Any) -> Any:
            """The operation, true division included."""
            import torch

            fn = {
                "add": torch.add, "subtract": torch.sub, "multiply": torch.mul,
                "divide": torch.div, "maximum": torch.maximum, "minimum": torch.minimum,
                "power": torch.pow,
            }[self.op]
            return fn(self.constant, x) if self.constant_first else fn(x, self.constant)

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            first = ", constant first" if self.constant_first else ""
            return f"op={self.op}, constant={list(self.constant.shape)}{first}"

    return Arithmetic


@MODULES.define("Parameter")
def _parameter_class(nn: Any) -> type:
    class Parameter(nn.Module):
        """A stored tensor, repeated over the batch of the input (spec kind ``parameter``)."""

        def __init__(self, value: Any) -> None:
            super().__init__()
            self.value = nn.Parameter(value, requires_grad=value.is_floating_point())

        def forward(self, x: Any) -> Any:
            """``value`` expanded to ``x``'s batch (a view, no copy)."""
            return self.value.unsqueeze(0).expand(x.shape[0], *self.value.shape)

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return f"shape={list(self.value.shape)}"

    return Parameter


@MODULES.define("Cast")
def _cast_class(nn: Any) -> type:
    class Cast(nn.Module):
        """``x.to(dtype)`` (spec kind ``cast``)."""

        def __init__(self, dtype: Any) -> None:
            super().__init__()
            self.dtype = dtype

        def forward(self, x: Any) -> Any:
            """The conversion."""
            return x.to(self.dtype)

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return f"dtype={self.dtype}"

    return Cast


def _tensor(archive: Archive, ref: Any) -> Any:
    return numpy_to_tensor(np.array(archive.tensors[ref.key]))


@TORCH_WRITE.register("reduce")
def _reduce(layer: Any, archive: Archive) -> list[Any]:
    return [MODULES.get("Reduce")(layer.op, layer.axes, layer.keepdims)]


@TORCH_WRITE.register("slice")
def _slice(layer: Any, archive: Archive) -> list[Any]:
    return [MODULES.get("Slice")(layer.axis, layer.start, layer.stop, layer.step)]


@TORCH_WRITE.register("arithmetic")
def _arithmetic(layer: Any, archive: Archive) -> list[Any]:
    learned = layer.parameter_role("constant") == "trainable"
    constant = _tensor(archive, layer.constant)
    return [MODULES.get("Arithmetic")(layer.op, constant, layer.constant_first, learned)]


@TORCH_WRITE.register("parameter")
def _parameter(layer: Any, archive: Archive) -> list[Any]:
    return [MODULES.get("Parameter")(_tensor(archive, layer.value))]


@TORCH_WRITE.register("cast")
def _cast(layer: Any, archive: Archive) -> list[Any]:
    torch_module("building PyTorch modules")
    return [MODULES.get("Cast")(torch_dtype_for(numpy_dtype(layer.dtype)))]
