"""Pure numpy layout transforms between framework layouts and the canonical one.

Each transform is exact (a permutation of elements, never arithmetic), so values survive
bit for bit. docs/conventions.md has the table; tests run every transform both ways.
"""

from __future__ import annotations

import numpy as np

#: The line recorded in provenance when a Keras Dense kernel is transposed.
DENSE_KERNEL_TRANSPOSED = "dense.weight: Keras kernel [in, out] transposed to canonical [out, in]"


def dense_weight_from_keras(kernel: np.ndarray) -> np.ndarray:
    """Keras Dense kernel ``[in, out]`` -> canonical weight ``[out, in]``.

    A transposed *view*, not a copy: a kernel memory-mapped from a weights file stays lazy, and
    writers make the C-order bytes one tensor at a time, so reading a large Keras file never
    holds a transposed copy of the whole model.
    """
    return np.asarray(kernel).T


def dense_weight_to_keras(weight: np.ndarray) -> np.ndarray:
    """Canonical weight ``[out, in]`` -> Keras Dense kernel ``[in, out]`` (a contiguous copy)."""
    return np.ascontiguousarray(np.asarray(weight).T)
