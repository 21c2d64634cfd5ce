"""What ``weightio inspect`` shows: per layer its kind, parameters, shapes, dtypes and counts.

Built from the spec alone (header-only), so it is instant on any size of archive.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from weightio.archive import Archive
from weightio.dtypes import numpy_dtype


class TensorInfo(BaseModel):
    """One parameter tensor."""

    param: str
    key: str
    shape: list[int]
    dtype: str
    count: int


class LayerInfo(BaseModel):
    """One layer and its parameters."""

    name: str
    kind: str
    source_class: str | None
    detail: str
    inputs: list[str]
    tensors: list[TensorInfo]
    parameter_count: int


class Inspection(BaseModel):
    """The whole model, as ``inspect --json`` prints it."""

    name: str
    source_framework: str
    source_class: str | None
    weights_only: bool
    inputs: list[dict[str, object]]
    outputs: list[dict[str, object]]
    layers: list[LayerInfo]
    parameter_count: int
    bytes_by_dtype: dict[str, int]


def _detail(layer: object) -> str:
    kind = getattr(layer, "kind", "")
    if kind == "dense":
        act = layer.activation.describe()  # type: ignore[attr-defined]
        return f"units={layer.units}, in={layer.in_features}, activation={act}"  # type: ignore[attr-defined]
    if kind == "activation":
        return layer.activation.describe()  # type: ignore[attr-defined]
    if kind == "dropout":
        return f"rate={layer.rate}"  # type: ignore[attr-defined]
    return ""


def inspect_archive(archive: Archive) -> Inspection:
    """Summarise ``archive`` from its spec (no tensor bytes are read)."""
    spec = archive.spec
    layers = []
    by_dtype: dict[str, int] = {}
    for index, layer in enumerate(spec.layers):
        tensors = []
        for param, ref in layer.tensor_refs().items():
            count = math.prod(ref.shape)
            tensors.append(
                TensorInfo(param=param, key=ref.key, shape=list(ref.shape), dtype=ref.dtype, count=count)
            )
            by_dtype[ref.dtype] = by_dtype.get(ref.dtype, 0) + count * numpy_dtype(ref.dtype).itemsize
        layers.append(
            LayerInfo(
                name=layer.name,
                kind=layer.kind,
                source_class=layer.source_class,
                detail=_detail(layer),
                inputs=[] if spec.weights_only else spec.layer_inputs(index),
                tensors=tensors,
                parameter_count=sum(t.count for t in tensors),
            )
        )
    return Inspection(
        name=spec.name,
        source_framework=spec.provenance.source_framework,
        source_class=spec.provenance.source_class,
        weights_only=spec.weights_only,
        inputs=[i.model_dump() for i in spec.inputs],
        outputs=[o.model_dump(exclude_none=True) for o in spec.outputs],
        layers=layers,
        parameter_count=sum(layer.parameter_count for layer in layers),
        bytes_by_dtype=by_dtype,
    )
