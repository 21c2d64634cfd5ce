"""The safetensors dtype names and their numpy counterparts.

The archive stores every tensor in its own dtype, bit-exact. numpy has no bfloat16 or float8, so
those come from ``ml_dtypes`` (the same types JAX and TensorFlow use). This table is the one
place that knows the mapping; nothing else in weightio spells a dtype string.

``ml_dtypes`` costs ~0.6 s to import (its extension registers casts with numpy), more than reading
any header, so it is imported only when a bfloat16 or float8 dtype is actually needed: sizes come
from ``ITEMSIZE`` without it, and an array can only carry an ``ml_dtypes`` dtype once that module
is loaded, so ``dtype_name`` looks there only then. numpy itself (~0.1 s) is imported on the
first call that needs a numpy dtype, so reading and printing a header needs neither.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

from weightio.errors import UnsupportedDtypeError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

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

#: Bytes per element of every dtype name (no ``ml_dtypes`` import needed).
ITEMSIZE: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4,
    "F32": 4, "U64": 8, "I64": 8, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1, "F8_E8M0": 1, "C64": 8,
}

#: The dtypes numpy has itself, as numpy dtype strings (``np.dtype`` of each on first use).
_NUMPY_NATIVE = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2", "U32": "<u4",
    "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8", "C64": "<c8",
}
_NUMPY_BY_NAME: dict[str, Any] = {}
_NAME_BY_NUMPY: dict[Any, str] = {}


def _load_numpy() -> None:
    """Fill both tables with numpy's own dtypes (once)."""
    if _NUMPY_BY_NAME:
        return
    import numpy as np

    native = {name: np.dtype(code) for name, code in _NUMPY_NATIVE.items()}
    _NAME_BY_NUMPY.update({dt.newbyteorder("<"): name for name, dt in native.items()})
    _NUMPY_BY_NAME.update(native)


#: The ``ml_dtypes`` ones, by attribute name: added to the tables on first use.
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}

ALL_DTYPE_NAMES: tuple[str, ...] = tuple(ITEMSIZE)
FLOAT_DTYPE_NAMES: frozenset[str] = frozenset({"F16", "BF16", "F32", "F64"})


def _load_ml_dtypes() -> None:
    """Import ``ml_dtypes`` and add its dtypes to both tables (once)."""
    if _ML_DTYPES_LOADED:
        return
    import ml_dtypes
    import numpy as np

    _load_numpy()
    loaded = {name: np.dtype(getattr(ml_dtypes, attribute)) for name, attribute in _ML_DTYPES.items()}
    _NAME_BY_NUMPY.update({dt.newbyteorder("<"): name for name, dt in loaded.items()})
    _NUMPY_BY_NAME.update(loaded)
    _ML_DTYPES_LOADED.append(True)


_ML_DTYPES_LOADED: list[bool] = []


def numpy_dtype(name: str, *, tensor: str | None = None) -> np.dtype:
    """Return the little-endian numpy dtype stored under a safetensors dtype name."""
    if not _NUMPY_BY_NAME:
        _load_numpy()
    try:
        return _NUMPY_BY_NAME[name]
    except (KeyError, TypeError):
        if isinstance(name, str) and name in _ML_DTYPES:
            _load_ml_dtypes()
            return _NUMPY_BY_NAME[name]
        raise UnsupportedDtypeError(
            f"unknown dtype {name!r}; weightio stores {', '.join(ALL_DTYPE_NAMES)}. "
            f"Received: dtype={name!r}",
            tensor=tensor,
        ) from None


def itemsize(name: str, *, tensor: str | None = None) -> int:
    """Bytes per element of a safetensors dtype name (``numpy_dtype(name).itemsize``, no import)."""
    size = ITEMSIZE.get(name) if isinstance(name, str) else None
    if size is None:
        numpy_dtype(name, tensor=tensor)  # raises the same error
    return size  # type: ignore[return-value]


def dtype_name(dtype: np.dtype | type, *, tensor: str | None = None) -> str:
    """Return the safetensors dtype name of a numpy dtype (either byte order)."""
    import numpy as np

    _load_numpy()
    dt = np.dtype(dtype)
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        dt = dt.newbyteorder("<")
    name = _NAME_BY_NUMPY.get(dt)
    if name is None and "ml_dtypes" in sys.modules:  # an ml_dtypes dtype exists only once loaded
        _load_ml_dtypes()
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
    import numpy as np

    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        return array.astype(array.dtype.newbyteorder("<"))
    return array


def tensor_bytes(array: np.ndarray) -> memoryview:
    """Return the stored bytes of ``array`` (C order, little-endian) without copying if possible."""
    import numpy as np

    array = as_little_endian(np.ascontiguousarray(array))
    return memoryview(array.reshape(-1).view(np.uint8))
