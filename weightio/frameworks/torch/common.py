"""What every part of the PyTorch adapter shares: the lazy import, names, and tensor transfer.

Tensors cross between torch and numpy here and nowhere else, so the bit-exact rules live in one
place: bfloat16 and float8 have no numpy dtype of their own, so their bytes are reinterpreted as
integers on one side and viewed as the ``ml_dtypes`` type on the other; nothing is ever cast.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from weightio.errors import UnsupportedTensorError
from weightio.format.limits import check_view
from weightio.optional import require
from weightio.spec.dtypes import numpy_dtype

if TYPE_CHECKING:
    import torch

#: torch dtypes numpy lacks, by torch attribute name: (same-width integer dtype, the safetensors
#: name of the ``ml_dtypes`` type, resolved by ``numpy_dtype`` when first needed).
_REINTERPRETED: dict[str, tuple[str, Any]] = {
    "bfloat16": ("int16", "BF16"),
    "float8_e4m3fn": ("uint8", "F8_E4M3"),
    "float8_e5m2": ("uint8", "F8_E5M2"),
    "float8_e4m3fnuz": ("uint8", "F8_E4M3FNUZ"),
    "float8_e5m2fnuz": ("uint8", "F8_E5M2FNUZ"),
    "float8_e8m0fnu": ("uint8", "F8_E8M0"),
}


def torch_module(purpose: str) -> ModuleType:
    """Import torch, or raise one line naming the extra to install."""
    return require("torch", purpose=purpose)


def loaded_torch_version() -> str | None:
    """Torch's version if torch is already imported (never imports it just to ask)."""
    module = sys.modules.get("torch")
    return getattr(module, "__version__", None) if module is not None else None


def is_torch_tensor(value: object) -> bool:
    """True for a torch tensor, without importing torch when it is not loaded."""
    module = sys.modules.get("torch")
    return module is not None and isinstance(value, module.Tensor)


def qualified_name(obj: type | Any) -> str:
    """A class's stable public name: ``torch.nn.Linear`` rather than its defining module's path.

    Registry keys and ``source_class`` use it, so they survive torch moving classes between its
    private ``torch.nn.modules.*`` files.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__ or ""
    if module.startswith("torch.nn.modules"):
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch.nn, cls.__name__, None) is cls:
            return f"torch.nn.{cls.__name__}"
    return f"{module}.{cls.__qualname__}" if module else cls.__qualname__


def check_storable(tensor: torch.Tensor, *, key: str) -> None:
    """Refuse tensors whose values cannot be stored bit-exact as a plain dense array.

    Raises:
        UnsupportedTensorError: quantized, sparse/non-strided, meta, or a tensor subclass.
    """
    torch = torch_module("reading PyTorch tensors")
    if not isinstance(tensor, torch.Tensor):
        raise UnsupportedTensorError(
            "is not a tensor, so it has no values weightio can store (packed or custom state, "
            f"e.g. of a quantized module). Received: type={qualified_name(tensor)}",
            tensor=key,
        )
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise UnsupportedTensorError(
            f"is a {qualified_name(tensor)}, a tensor subclass whose values weightio cannot "
            "store bit-exact; materialise it as a plain tensor first (an uninitialised lazy "
            "module needs one forward pass). Received: type=" + qualified_name(tensor),
            tensor=key,
        )
    if tensor.is_quantized:
        raise UnsupportedTensorError(
            "is quantized; weightio stores plain tensors only. Dequantize it first "
            f"(tensor.dequantize()) or archive the float model. Received: dtype={tensor.dtype}",
            tensor=key,
        )
    if tensor.layout != torch.strided:
        raise UnsupportedTensorError(
            "is not a dense (strided) tensor; convert it with tensor.to_dense() first. "
            f"Received: layout={tensor.layout}",
            tensor=key,
        )
    if tensor.is_meta:
        raise UnsupportedTensorError(
            "is on the meta device and holds no values; load real weights into the model "
            "first. Received: device=meta",
            tensor=key,
        )


def tensor_to_numpy(tensor: torch.Tensor, *, key: str, copy: bool = True) -> np.ndarray:
    """Return ``tensor``'s values as a numpy array of the same dtype, bit-exact.

    Args:
        tensor: A plain dense torch tensor (checked with ``check_storable``).
        key: Its name, for error messages.
        copy: Copy the values, so later training of a live module cannot change the archive.
            Tensors that nobody else holds (just loaded from a file) need no copy.
    """
    torch = torch_module("reading PyTorch tensors")
    check_storable(tensor, key=key)
    # a broadcast view (stride 0) claims more than its storage holds: bounded before resolving
    check_view(tuple(tensor.shape), tuple(tensor.stride()), tensor.element_size(),
               tensor.untyped_storage().nbytes(), tensor=key)
    data = tensor.detach().cpu().resolve_conj().resolve_neg()
    special = _REINTERPRETED.get(str(data.dtype).removeprefix("torch."))
    if special is not None:
        int_dtype, name = special
        array = data.view(getattr(torch, int_dtype)).numpy().view(numpy_dtype(name))
    else:
        try:
            array = data.numpy()
        except TypeError as exc:
            raise UnsupportedTensorError(
                f"has a dtype numpy cannot hold ({exc}). Received: dtype={data.dtype}",
                tensor=key,
            ) from None
    return np.array(array, copy=True) if copy else array


def numpy_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Return a torch tensor holding ``array``'s exact bits in the matching torch dtype.

    Always copies: archive arrays are read-only memory maps, and torch must own its weights.
    """
    torch = torch_module("building PyTorch tensors")
    for torch_name, (int_dtype, name) in _REINTERPRETED.items():
        if "ml_dtypes" in sys.modules and array.dtype == numpy_dtype(name):  # only then can it be one
            raw = np.array(array, copy=True, order="C").view(np.dtype(int_dtype))
            return torch.from_numpy(raw).view(getattr(torch, torch_name))
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def torch_dtype_for(dtype: np.dtype) -> torch.dtype:
    """The torch dtype holding values of numpy ``dtype`` (``ml_dtypes`` types included)."""
    return numpy_to_tensor(np.zeros((0,), dtype=dtype)).dtype


def torch_dtype_name(dtype: torch.dtype) -> str:
    """The safetensors dtype name (``F32``, ``BF16``…) of a torch dtype."""
    from weightio.spec.dtypes import dtype_name

    torch = torch_module("reading PyTorch dtypes")
    probe = tensor_to_numpy(torch.zeros((), dtype=dtype), key=f"<{dtype}>")
    return dtype_name(probe.dtype)
