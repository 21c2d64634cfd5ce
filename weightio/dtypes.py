"""The safetensors dtype names and their numpy counterparts.

The archive stores every tensor in its own dtype, bit-exact. numpy has no bfloat16 or float8, so
those come from ``ml_dtypes`` (the same types JAX and TensorFlow use). This table is the one
place that knows the mapping; nothing else in weightio spells a dtype string.
"""

from __future__ import annotations

from typing import Literal

import ml_dtypes
import numpy as np

from weightio.errors import UnsupportedDtypeError

DTypeName = Literal[
    "BOOL",
    "U8",
    "I8",
    "U16",
    "I16",
    "F16",
    "BF16",
    "U32",
    "I32",
    "F32",
    "U64",
    "I64",
    "F64",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "F8_E8M0",
    "C64",
]

_NUMPY_BY_NAME: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "C64": np.dtype("<c8"),
}

_NAME_BY_NUMPY: dict[np.dtype, str] = {dt.newbyteorder("<"): name for name, dt in _NUMPY_BY_NAME.items()}

ALL_DTYPE_NAMES: tuple[str, ...] = tuple(_NUMPY_BY_NAME)
FLOAT_DTYPE_NAMES: frozenset[str] = frozenset({"F16", "BF16", "F32", "F64"})


def numpy_dtype(name: str, *, tensor: str | None = None) -> np.dtype:
    """Return the little-endian numpy dtype stored under a safetensors dtype name."""
    try:
        return _NUMPY_BY_NAME[name]
    except (KeyError, TypeError):
        raise UnsupportedDtypeError(
            f"unknown dtype {name!r}; weightio stores {', '.join(ALL_DTYPE_NAMES)}. "
            f"Received: dtype={name!r}",
            tensor=tensor,
        ) from None


def dtype_name(dtype: np.dtype | type, *, tensor: str | None = None) -> str:
    """Return the safetensors dtype name of a numpy dtype (either byte order)."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        dt = dt.newbyteorder("<")
    name = _NAME_BY_NUMPY.get(dt)
    if name is None:
        raise UnsupportedDtypeError(
            f"numpy dtype {dt} has no safetensors equivalent; convert it explicitly before "
            f"archiving. Received: dtype={dt}",
            tensor=tensor,
        )
    return name


def as_little_endian(array: np.ndarray) -> np.ndarray:
    """Return ``array`` with little-endian byte order, values unchanged (no cast)."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        return array.astype(array.dtype.newbyteorder("<"))
    return array
