"""The runtime's registry of layer functions, and what every family module needs from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from weightio.errors import InvalidInputError
from weightio.registry import Registry
from weightio.spec.base import LayerBase

LayerFn = Callable[[LayerBase, Mapping[str, np.ndarray], list[np.ndarray]], np.ndarray]

RUNTIME: Registry[LayerFn] = Registry("numpy", "run")

InputLike = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


def as_float64(array: np.ndarray) -> np.ndarray:
    """Floating arrays (bf16 and float8 included) as float64; integers stay as they are."""
    if array.dtype.kind in "fc" or array.dtype.name in {"bfloat16"} or "float8" in array.dtype.name:
        return np.asarray(array, dtype=np.float64)
    return np.asarray(array)


def along_axis(vector: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of a rank-``rank`` array."""
    shape = [1] * rank
    shape[axis] = vector.shape[0]
    return vector.reshape(shape)


def positive_axis(axis: int, x: np.ndarray, layer: str) -> int:
    """``axis`` counted from the front, refused when it is the batch axis or out of range."""
    positive = axis if axis >= 0 else axis + x.ndim
    if not 0 < positive < x.ndim:
        raise InvalidInputError(
            f"axis {axis} is out of range for a rank-{x.ndim} input", layer=layer
        )
    return positive
