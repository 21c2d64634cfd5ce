"""What every framework reader shares: collecting arrays under tensor keys, making the archive."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.format.archive import Archive, tensor_ref
from weightio.spec.dtypes import as_little_endian
from weightio.spec.model import ModelSpec
from weightio.spec.tensors import TensorRef


class TensorCollector:
    """Gathers a reader's arrays under ``<layer>.<param>`` keys and hands back ``TensorRef``s."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, layer: str, param: str, array: np.ndarray) -> TensorRef:
        """Store ``array`` as parameter ``param`` of ``layer`` and return its reference."""
        key = f"{layer}.{param}"
        if key in self.arrays:
            raise ValueError(f"tensor {key!r} collected twice")
        array = as_little_endian(np.asarray(array))
        self.arrays[key] = array
        return tensor_ref(key, array)


def make_archive(spec_data: dict[str, Any], arrays: dict[str, np.ndarray]) -> Archive:
    """Validate ``spec_data`` and pair it with ``arrays``."""
    from weightio.spec import spec_from_data

    spec: ModelSpec = spec_from_data(spec_data)
    return Archive(spec, arrays)
