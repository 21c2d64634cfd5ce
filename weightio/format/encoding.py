"""Encoded parameters (format 1.2): the one decoding every reader of an archive goes through.

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
    scale = np.asarray(stored[encoding.scale.key], dtype=np.float32).reshape(shape)
    values = q.astype(np.float32)
    if encoding.zero_point is not None:
        values = values - np.asarray(stored[encoding.zero_point.key]).astype(np.float32).reshape(shape)
    return (values * scale).astype(numpy_dtype(ref.dtype))

