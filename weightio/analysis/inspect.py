"""What ``weightio inspect`` shows: per layer its kind, parameters, shapes, dtypes and counts.

Built from the spec alone (header-only), so it is instant on any size of archive. With
``stats=True`` it also reads every tensor (chunk by chunk, memory bounded) for its mean, std,
min, max, L2 norm, fraction of zeros and NaN/Inf counts: opt-in, because that reads every byte.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

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
    #: A shared tensor (docs/format.md): every ``layer.param`` reading it, this one included;
    #: the model's counts include it once, at its first reader.
    shared_by: list[str] | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_stats(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without ``--stats`` the JSON keeps its header-only shape (no ``stats: null``), and an
        unshared tensor has no ``shared_by``.
        """
        data: dict[str, Any] = handler(self)
        if data.get("stats") is None:
            data.pop("stats", None)
        if data.get("shared_by") is None:
            data.pop("shared_by", None)
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
    #: Whose names and shapes ``tensors`` are in: ``canonical`` (weightio's, PyTorch's layout),
    #: or the source framework's (``keras``, ``torch``) with ``inspect --native``. Native
    #: tensors' ``key`` is the framework's path (``lstm/lstm_cell/kernel``, a state-dict key).
    names: str = "canonical"


class NativeTensorLike(Protocol):
    """One array as its framework holds it (``weightio.frameworks.*.native``)."""

    name: str
    path: str
    shape: tuple[int, ...]
    dtype: str
    role: str


def _nonfinite(archive: Archive, layers: list[LayerInfo], stats: bool) -> list[NonFiniteInfo] | None:
    """From the stats when they were read, else a bounded scan (``None``: too large to scan)."""
    if stats:
        return [NonFiniteInfo(key=t.key, nan=t.stats.nan_count, inf=t.stats.inf_count)
                for layer in layers for t in layer.tensors
                if t.stats is not None and (t.stats.nan_count or t.stats.inf_count)]
    from weightio.spec.dtypes import FLOAT_DTYPE_NAMES

    floats = sum(math.prod(r.shape) * itemsize(r.dtype)
                 for _, _, r in archive.spec.unique_tensor_refs() if r.dtype in FLOAT_DTYPE_NAMES)
    if floats > NONFINITE_SCAN_LIMIT or archive.url is not None:  # a remote archive: header only
        return None
    from weightio.analysis.nonfinite import scan_nonfinite  # numpy: only when it scans
    return [NonFiniteInfo(key=f.key, nan=f.nan, inf=f.posinf + f.neginf) for f in scan_nonfinite(archive)]


def inspect_archive(
    archive: Archive,
    *,
    stats: bool = False,
    progress: bool = False,
    native: Mapping[str, Sequence[NativeTensorLike]] | None = None,
    names: str = "canonical",
) -> Inspection:
    """Summarise ``archive``.

    Args:
        archive: The archive to describe.
        stats: Also read every tensor for per-tensor statistics (off: header only, instant).
        progress: With ``stats``, draw a progress bar on stderr for passes over a few hundred MB.
        native: Per layer name, its tensors as the source framework holds them (``names`` says
            which); they replace the canonical ones in the report and its counts.
            ``weightio.inspect(source, native=True)`` computes them.

    Raises:
        InvalidInputError: ``native`` with ``stats`` (statistics are of the canonical tensors).
    """
    if native is not None and stats:
        from weightio.errors import InvalidInputError

        raise InvalidInputError(
            "native names and shapes come with no statistics: the statistics are read from "
            "weightio's canonical tensors; inspect with stats and with native names apart"
        )
    spec = archive.spec
    layers = []
    by_dtype: dict[str, int] = {}
    total = sum(math.prod(r.shape) * itemsize(r.dtype) for _, _, r in spec.unique_tensor_refs())
    shapes = {} if spec.weights_only else activation_shapes(spec)
    shared = spec.shared_tensors()
    seen: set[str] = set()
    every: list[TensorInfo] = []  # each tensor once: what the model's counts add up
    with byte_progress("stats", total if stats else 0, enabled=progress) as advance:
        for index, layer in enumerate(spec.layers):
            tensors = []
            for param, ref in layer.tensor_refs().items():
                count = math.prod(ref.shape)
                # an encoded (quantised) parameter: its stored dtype and bytes, scales included
                stored = ref.stored_refs()
                nbytes = sum(math.prod(r.shape) * itemsize(r.dtype) for r in stored)
                first = ref.key not in seen
                tensors.append(
                    TensorInfo(
                        param=param, key=ref.key, shape=list(ref.shape), dtype=stored[0].dtype, count=count,
                        role=layer.parameter_role(param), nbytes=nbytes,
                        stats=tensor_stats(archive.tensors[ref.key]) if stats else None,
                        shared_by=shared.get(ref.key),
                    )
                )
                if not first:
                    continue
                seen.add(ref.key)
                every.append(tensors[-1])
                if stats:
                    advance(count * itemsize(ref.dtype))
                if native is None:
                    for part in stored:
                        part_bytes = math.prod(part.shape) * itemsize(part.dtype)
                        by_dtype[part.dtype] = by_dtype.get(part.dtype, 0) + part_bytes
            if native is not None and layer.name in native:
                tensors = [_native_info(t) for t in native[layer.name]]
            layers.append(_layer_info(spec, index, layer, tensors, shapes))
            if native is not None:
                for t in tensors:
                    by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    if native is not None:  # the source framework's own tensors: what its counts add up
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
        parameter_count=sum(t.count for t in every),
        trainable_count=sum(t.count for t in every if t.role != "buffer"),
        buffer_count=sum(t.count for t in every if t.role == "buffer"),
        total_bytes=sum(by_dtype.values()),
        bytes_by_dtype=by_dtype,
        names="canonical" if native is None else names,
    )


def _native_info(t: NativeTensorLike) -> TensorInfo:
    count = math.prod(t.shape)
    return TensorInfo(param=t.name, key=t.path, shape=list(t.shape), dtype=t.dtype, count=count,
                      role=t.role, nbytes=count * itemsize(t.dtype))


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
