"""Seeded probe inputs for a model: what every witness of a conversion is run on."""

from __future__ import annotations

import numpy as np

from weightio.spec.dtypes import numpy_dtype
from weightio.spec.model import ModelSpec


def index_bounds(spec: ModelSpec) -> dict[str, int]:
    """For each input read directly by embeddings: the smallest vocabulary among them.

    Probing an integer input with indices outside a vocabulary would make every witness fail
    (or, in some frameworks, read garbage), so integer probes stay below this bound.
    """
    bounds: dict[str, int] = {}
    for index, layer in enumerate(spec.layers):
        vocabulary = getattr(layer, "num_embeddings", None)
        if layer.kind != "embedding" or vocabulary is None:
            continue
        for source in spec.layer_inputs(index):
            bounds[source] = min(bounds.get(source, vocabulary), vocabulary)
    return bounds


def probe_inputs(spec: ModelSpec, *, seed: int = 0, samples: int = 8) -> list[np.ndarray]:
    """Seeded inputs for every model input: standard normal, free dimensions set to 4.

    Integer inputs get indices in ``[0, 2)``, or across the whole vocabulary of the embeddings
    reading them.
    """
    rng = np.random.default_rng(seed)
    bounds = index_bounds(spec)
    arrays = []
    for inp in spec.inputs:
        shape = (samples, *[4 if d is None else d for d in inp.shape])
        dtype = numpy_dtype(inp.dtype)
        if dtype.kind in "iu":
            arrays.append(rng.integers(0, bounds.get(inp.name, 2), size=shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays
