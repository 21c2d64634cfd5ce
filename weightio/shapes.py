"""Shapes read from files, checked against what numpy can represent before any array is made.

A header may declare a zero-size tensor with an absurd dimension (``[0, 2**62]``: no bytes, so
every byte-count check passes) or more dimensions than numpy supports; numpy then refuses with a
bare ``ValueError`` when the (empty) array is built. Readers call ``check_shape`` first so that
such a file gets a typed error naming it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from weightio.errors import MalformedFileError

#: Most dimensions numpy arrays may have (64 since numpy 2, 32 before).
MAX_DIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


def check_shape(
    shape: Sequence[int],
    itemsize: int,
    *,
    file: object | None = None,
    tensor: str | None = None,
    layer: str | None = None,
) -> None:
    """Raise ``MalformedFileError`` unless numpy can build an array of ``shape``.

    Args:
        shape: Non-negative Python ints, as the file states them.
        itemsize: Bytes per element.
    """
    if len(shape) > MAX_DIMS:
        raise MalformedFileError(
            f"shape has {len(shape)} dimensions; weightio reads at most {MAX_DIMS}",
            file=file, tensor=tensor, layer=layer,
        )
    if math.prod(d for d in shape if d) * max(itemsize, 1) > sys.maxsize:
        raise MalformedFileError(
            f"shape {list(shape)} is larger than any array can be (even when empty); the file "
            "is corrupt or hostile",
            file=file, tensor=tensor, layer=layer,
        )
