"""What ``weightio inspect`` shows: per layer its kind, parameters, shapes, dtypes and counts.

Built from the spec alone (header-only), so it is instant on any size of archive. With
``stats=True`` it also reads every tensor (chunk by chunk, memory bounded) for its mean, std,
min, max, L2 norm, fraction of zeros and NaN/Inf counts: opt-in, because that reads every byte.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from weightio.analysis.stats import TensorStats, tensor_stats
from weightio.format.archive import Archive
from weightio.progress import byte_progress
from weightio.spec.dtypes import itemsize
from weightio.spec.model import activation_shapes


class TensorInfo(BaseModel):
    """One parameter tensor."""

    param: str
    key: str
    shape: list[int]
    dtype: str
    count: int
    #: ``trainable`` (a parameter) or ``buffer`` (batch-norm statistics and the like: Keras's
    #: non-trainable weights, torch's buffers), counted apart as Keras summary() and torchinfo do.
    role: str = "trainable"
    nbytes: int = 0
    stats: TensorStats | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_stats(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without ``--stats`` the JSON keeps its header-only shape (no ``stats: null``)."""
        data: dict[str, Any] = handler(self)
        if data.get("stats") is None:
            data.pop("stats", None)
        return data


class LayerInfo(BaseModel):
    """One layer and its parameters."""

    name: str
    kind: str
    source_class: str | None
    detail: str
    inputs: list[str]
    tensors: list[TensorInfo]
    parameter_count: int
    #: The layer's output shape without the batch axis, for the model's declared input shape
    #: (``None`` entries are free dimensions; ``None`` when the spec does not fix it).
    output_shape: list[int | None] | None = None


class NonFiniteInfo(BaseModel):
    """A tensor holding NaN or +-inf (archived bit-exactly; named so nobody is surprised)."""

    key: str
    nan: int
    inf: int


#: Without ``stats``, float tensors up to this many bytes in all are scanned for NaN/Inf (tens of
#: milliseconds, even from a cold cache); beyond it ``inspect`` stays header-only, as fast as
#: reading the header, and says it did not look (``--stats`` always does).
NONFINITE_SCAN_LIMIT = 64 * 1024 * 1024


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
    #: ``parameter_count`` split: trainable parameters and non-trainable buffers.
    trainable_count: int = 0
    buffer_count: int = 0
    total_bytes: int = 0
    bytes_by_dtype: dict[str, int]
    #: Tensors holding NaN/Inf; ``None`` when not checked (no ``stats`` and a large archive).
    nonfinite: list[NonFiniteInfo] | None = None


def _nonfinite(archive: Archive, layers: list[LayerInfo], stats: bool) -> list[NonFiniteInfo] | None:
    """From the stats when they were read, else a bounded scan (``None``: too large to scan)."""
    if stats:
        return [NonFiniteInfo(key=t.key, nan=t.stats.nan_count, inf=t.stats.inf_count)
                for layer in layers for t in layer.tensors
                if t.stats is not None and (t.stats.nan_count or t.stats.inf_count)]
    from weightio.spec.dtypes import FLOAT_DTYPE_NAMES

    floats = sum(math.prod(r.shape) * itemsize(r.dtype)
                 for _, _, r in archive.spec.tensor_refs() if r.dtype in FLOAT_DTYPE_NAMES)
    if floats > NONFINITE_SCAN_LIMIT or archive.url is not None:  # a remote archive: header only
        return None
    from weightio.analysis.nonfinite import scan_nonfinite  # numpy: only when it scans
    return [NonFiniteInfo(key=f.key, nan=f.nan, inf=f.posinf + f.neginf) for f in scan_nonfinite(archive)]


def inspect_archive(archive: Archive, *, stats: bool = False, progress: bool = False) -> Inspection:
    """Summarise ``archive``.

    Args:
        archive: The archive to describe.
        stats: Also read every tensor for per-tensor statistics (off: header only, instant).
        progress: With ``stats``, draw a progress bar on stderr for passes over a few hundred MB.
    """
    spec = archive.spec
    layers = []
    by_dtype: dict[str, int] = {}
    total = sum(math.prod(r.shape) * itemsize(r.dtype) for _, _, r in spec.tensor_refs())
    shapes = {} if spec.weights_only else activation_shapes(spec)
    with byte_progress("stats", total if stats else 0, enabled=progress) as advance:
        for index, layer in enumerate(spec.layers):
            tensors = []
            for param, ref in layer.tensor_refs().items():
                count = math.prod(ref.shape)
                nbytes = count * itemsize(ref.dtype)
                tensors.append(
                    TensorInfo(
                        param=param, key=ref.key, shape=list(ref.shape), dtype=ref.dtype, count=count,
                        role=layer.parameter_role(param), nbytes=nbytes,
                        stats=tensor_stats(archive.tensors[ref.key]) if stats else None,
                    )
                )
                if stats:
                    advance(nbytes)
                by_dtype[ref.dtype] = by_dtype.get(ref.dtype, 0) + nbytes
            layers.append(_layer_info(spec, index, layer, tensors, shapes))
    every = [t for layer in layers for t in layer.tensors]
    return Inspection(
        nonfinite=_nonfinite(archive, layers, stats),
        name=spec.name,
        source_framework=spec.provenance.source_framework,
        source_class=spec.provenance.source_class,
        weights_only=spec.weights_only,
        inputs=[i.model_dump() for i in spec.inputs],
        outputs=[o.model_dump(exclude_none=True) for o in spec.outputs],
        layers=layers,
        parameter_count=sum(layer.parameter_count for layer in layers),
        trainable_count=sum(t.count for t in every if t.role != "buffer"),
        buffer_count=sum(t.count for t in every if t.role == "buffer"),
        total_bytes=sum(by_dtype.values()),
        bytes_by_dtype=by_dtype,
    )


def _layer_info(
    spec: Any, index: int, layer: Any, tensors: list[TensorInfo], shapes: dict[str, Any]
) -> LayerInfo:
    shape = shapes.get(layer.name)
    return LayerInfo(
        output_shape=None if shape is None else list(shape),
        name=layer.name,
        kind=layer.kind,
        source_class=layer.source_class,
        detail=layer.detail(),
        inputs=[] if spec.weights_only else spec.layer_inputs(index),
        tensors=tensors,
        parameter_count=sum(t.count for t in tensors),
    )
