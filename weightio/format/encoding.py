"""Encoded parameters (format 1.2): the one decoding every reader of an archive goes through.

Scheme ``weight_norm``: ``value = g * v / ||v||`` in float64 (``weight_norm_value``), the norm
over every axis but the encoding's ``axis``, cast to the parameter's dtype. Scheme ``linear``:

``value = (float32(q) - float32(zero_point)) * scale`` in float32, ``scale`` and ``zero_point``
broadcast along the encoding's ``axis`` (or scalars), then cast to the parameter's dtype. The
difference of two int8 values is exact in float32, so the value is one float32 product: every
reader that follows docs/format.md gets the same bits. ``Archive.tensors`` hands out decoded
arrays, so the runtime and every writer see plain floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from weightio.spec.dtypes import numpy_dtype
from weightio.spec.tensors import TensorRef

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def decode(ref: TensorRef, stored: Mapping[str, np.ndarray]) -> np.ndarray:
    """The parameter ``ref`` describes, decoded from the ``stored`` tensors of its file."""
    import numpy as np

    encoding = ref.encoding
    q = np.asarray(stored[ref.key])
    if encoding is None:
        return q
    shape = [1] * q.ndim
    if encoding.axis is not None:
        shape[encoding.axis] = q.shape[encoding.axis]
    if encoding.scheme == "weight_norm":
        return weight_norm_value(np.asarray(stored[encoding.scale.key]), q, encoding.axis).astype(
            numpy_dtype(ref.dtype))
    scale = np.asarray(stored[encoding.scale.key], dtype=np.float32).reshape(shape)
    values = q.astype(np.float32)
    if encoding.zero_point is not None:
        values = values - np.asarray(stored[encoding.zero_point.key]).astype(np.float32).reshape(shape)
    return (values * scale).astype(numpy_dtype(ref.dtype))



def weight_norm_value(g: np.ndarray, v: np.ndarray, axis: int | None) -> np.ndarray:
    """``g * v / ||v||`` in float64, the norm over every axis of ``v`` but ``axis`` (all of them
    when ``axis`` is None), ``g`` one value per index of ``axis`` (or a scalar).
    """
    import numpy as np

    v64 = np.asarray(v, dtype=np.float64)
    shape = [1] * v64.ndim
    if axis is None:
        norm = np.sqrt(np.sum(v64 * v64))
    else:
        shape[axis] = v64.shape[axis]
        others = tuple(a for a in range(v64.ndim) if a != axis)
        norm = np.sqrt(np.sum(v64 * v64, axis=others, keepdims=True))
    g64 = np.asarray(g, dtype=np.float64).reshape(shape if axis is not None else ())
    return g64 * v64 / norm
