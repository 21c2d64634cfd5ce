"""Int8 weights kept int8 in torch: ``QuantizedLinear`` and ``QuantizedConv`` (``to_torch(...,
keep_int8=True)``, ``weightio convert --keep-int8``).

A dense or conv layer whose weight is an 8-bit integer encoded parameter (format 1.2,
docs/format.md "Encoded parameters") becomes one of these modules instead of ``nn.Linear`` /
``nn.ConvNd``. The module holds the stored integers, the scale and the zero point as buffers
(``weight_int8`` int8 or uint8, ``scale`` float32, ``zero_point`` in the integer dtype, or
absent), so its state dict, ``.pt`` and ``.pt2`` files are about 4x smaller than a float32
one, and its ``forward`` decodes them by the documented rule,
``(float32(q) - float32(zero_point)) * scale`` cast to the compute dtype, before the plain
``F.linear`` / ``F.convNd``: the same weight bits as the dequantising writer, so the same
outputs. Torch's own quantised modules (``torch.ao.nn.quantized``) are not used: they quantise
the activations too and need a quantisation backend, so they would not compute the numbers
the archive documents.

Anything else with an encoding (float8, separable or transposed convolutions, …) is decoded
as usual; ``to_torch`` lists those layers in a ``UserWarning``.
"""

from __future__ import annotations

from typing import Any

from weightio.frameworks.torch.common import numpy_to_tensor, torch_dtype_for, torch_module
from weightio.frameworks.torch.write.base import ModuleClasses, parameter
from weightio.spec.dtypes import numpy_dtype
from weightio.spec.tensors import TensorEncoding

#: The kinds (and their weight parameter) that can keep an integer-encoded weight.
KEPT_KINDS = {"dense": "weight", "conv": "weight"}
#: The stored dtypes a kept weight may have.
INTEGER_DTYPES = ("I8", "U8")

MODULES = ModuleClasses(__name__)


def __getattr__(name: str) -> Any:
    return MODULES.attribute(name)


def kept_encoding(layer: Any) -> TensorEncoding | None:
    """The encoding of ``layer``'s weight if it stays integer in torch, else None."""
    param = KEPT_KINDS.get(layer.kind)
    if param is None:
        return None
    encoding = layer.tensor_refs()[param].encoding
    if encoding is None or encoding.scheme != "linear" or encoding.stored_dtype not in INTEGER_DTYPES:
        return None
    return encoding


def decoded_layers(archive: Any) -> list[str]:
    """Layers of ``archive`` with an encoded parameter that ``keep_int8`` still decodes."""
    names = []
    for layer in archive.spec.layers:
        encoded = [p for p, ref in layer.tensor_refs().items()
                   if ref.encoding is not None and ref.encoding.scheme == "linear"]
        kept = KEPT_KINDS.get(layer.kind) if kept_encoding(layer) is not None else None
        if any(p != kept for p in encoded):
            names.append(layer.name)
    return names


def int8_buffers(layer: Any, archive: Any) -> dict[str, Any]:
    """``weight_int8``, ``scale``, ``zero_point`` (or None), ``axis`` and ``dtype`` for a kept
    weight, straight from the archive's stored tensors.
    """
    ref = layer.tensor_refs()[KEPT_KINDS[layer.kind]]
    encoding = ref.encoding
    stored = archive.stored
    zero = encoding.zero_point
    return {
        "weight_int8": numpy_to_tensor(stored[ref.key].copy()),
        "scale": numpy_to_tensor(stored[encoding.scale.key].copy()),
        "zero_point": None if zero is None else numpy_to_tensor(stored[zero.key].copy()),
        "axis": encoding.axis,
        "dtype": torch_dtype_for(numpy_dtype(ref.dtype)),
    }


def bias_parameter(layer: Any, archive: Any) -> Any:
    """The layer's bias as an ``nn.Parameter``, or None."""
    return parameter(archive.tensor(layer.name, "bias")) if layer.use_bias else None


def _decoding_base(nn: Any) -> type:
    torch = torch_module("building PyTorch modules")

    class Int8Weight(nn.Module):
        """Buffers ``weight_int8``, ``scale``, ``zero_point`` and the rule that decodes them."""

        def __init__(self, weight_int8: Any, scale: Any, zero_point: Any, axis: int | None,
                     dtype: Any, bias: Any) -> None:
            super().__init__()
            self.axis = axis
            self.compute_dtype = dtype
            self.register_buffer("weight_int8", weight_int8)
            self.register_buffer("scale", scale)
            self.register_buffer("zero_point", zero_point)
            self.bias = bias

        def dequantized_weight(self) -> Any:
            """``(float32(q) - float32(zero_point)) * scale`` along ``axis``, in ``compute_dtype``."""
            shape = [1] * self.weight_int8.dim()
            if self.axis is not None:
                shape[self.axis] = self.weight_int8.shape[self.axis]
            values = self.weight_int8.to(torch.float32)
            if self.zero_point is not None:
                values = values - self.zero_point.to(torch.float32).reshape(shape)
            return (values * self.scale.reshape(shape)).to(self.compute_dtype)

    return Int8Weight


@MODULES.define("QuantizedLinear")
def _linear_class(nn: Any) -> type:
    F = torch_module("building PyTorch modules").nn.functional

    class QuantizedLinear(_decoding_base(nn)):  # type: ignore[misc]
        """``nn.Linear`` with its weight kept as int8 (``weight_int8 [out, in]``) plus a float32
        ``scale`` and an optional ``zero_point`` (per tensor, or per index of ``axis``),
        decoded in ``forward`` as docs/format.md "Encoded parameters" says.
        """

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.out_features, self.in_features = (int(n) for n in self.weight_int8.shape)

        def forward(self, x: Any) -> Any:
            """``F.linear(x, decoded weight, bias)``."""
            return F.linear(x, self.dequantized_weight(), self.bias)

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"bias={self.bias is not None}, stored={self.weight_int8.dtype}, axis={self.axis}")

    return QuantizedLinear


@MODULES.define("QuantizedConv")
def _conv_class(nn: Any) -> type:
    F = torch_module("building PyTorch modules").nn.functional

    class QuantizedConv(_decoding_base(nn)):  # type: ignore[misc]
        """``nn.Conv1d/2d/3d`` with its weight kept as int8 (``weight_int8 [out, in / groups,
        *kernel]``), decoded in ``forward`` as docs/format.md says; ``padding`` is symmetric
        (an asymmetric one is a ``ZeroPad`` module before it, as for ``nn.ConvNd``).
        """

        def __init__(self, *args: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> None:
            super().__init__(*args)
            self.rank = self.weight_int8.dim() - 2
            self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
            self.out_channels = int(self.weight_int8.shape[0])
            self.in_channels = int(self.weight_int8.shape[1]) * groups
            self.kernel_size = tuple(int(k) for k in self.weight_int8.shape[2:])

        def forward(self, x: Any) -> Any:
            """``F.convNd(x, decoded weight, bias, ...)``."""
            conv = (F.conv1d, F.conv2d, F.conv3d)[self.rank - 1]
            return conv(x, self.dequantized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

        def extra_repr(self) -> str:
            """Shown by ``print(module)``."""
            return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                    f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                    f"groups={self.groups}, stored={self.weight_int8.dtype}, axis={self.axis}")

    return QuantizedConv
