"""Every tensor's shape for a fixed input size, from a batch-1 run of the runtime."""

from __future__ import annotations

import numpy as np

from weightio.spec.model import ModelSpec


def tensor_shapes(archive: object) -> dict[str, tuple[int, ...]] | None:
    """Every tensor's shape without batch, from a batch-1 run of the numpy runtime.

    None when an input has a free dimension (the shapes then depend on the input).
    """
    from weightio.runtime.forward import forward
    from weightio.spec.dtypes import numpy_dtype

    spec: ModelSpec = archive.spec  # type: ignore[attr-defined]
    if any(d is None for inp in spec.inputs for d in inp.shape):
        return None
    zeros = [np.zeros((1, *inp.shape), dtype=numpy_dtype(inp.dtype)) for inp in spec.inputs]
    _, trace = forward(archive, zeros)  # type: ignore[arg-type]
    return {name: tuple(int(d) for d in value.shape[1:]) for name, value in trace.values.items()}
