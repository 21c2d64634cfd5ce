"""``weightio.analysis.diff``: compare two checkpoints layer by layer and tensor by tensor.

Both sides go through ``weightio.read``, so anything it accepts can be compared with anything
else (a ``.pt`` state dict against a ``.keras`` file, a live model against an archive). Readers
put every tensor in weightio's canonical layout, so a Keras kernel and the PyTorch weight it
became are compared as the same array, without any transposing here.

Alignment, in this order of preference:

1. **key**: both sides weights-only (bare state dicts): tensors pair by their state-dict key.
2. **name**: every parameterised layer's name is found on the other side.
3. **position**: the parameterised layers (layers holding tensors; activations hold none) pair
   in canonical order when the counts and kinds agree (Keras ``dense_1`` vs PyTorch ``fc2``).
4. otherwise names first, then the remaining layers by position while kinds agree; what is
   left over is ``removed`` (only in A) or ``added`` (only in B).

Inside a layer pair, tensors pair by canonical parameter name (``weight``, ``bias``, …).
Figures are computed streamed, bit patterns first, in one pass with float64 accumulators, on
every core (``weightio.analysis.streamcompare``), so memory stays flat on checkpoints of any size.
The JSON shape is documented in docs/inspect-and-diff.md.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from pydantic import BaseModel, Field

from weightio.analysis.stats import Comparison
from weightio.analysis.streamcompare import compare_pairs
from weightio.format.archive import Archive
from weightio.options import check_tolerance
from weightio.progress import byte_progress
from weightio.spec.base import LayerBase
from weightio.spec.dtypes import itemsize
from weightio.spec.model import ModelSpec
from weightio.spec.tensors import TensorRef

DIFF_FORMAT = "weightio.diff/1"

Status = Literal["identical", "changed", "shape_changed", "dtype_changed", "added", "removed"]
Match = Literal["key", "name", "position", "none"]
STATUSES: tuple[str, ...] = (
    "identical",
    "changed",
    "shape_changed",
    "dtype_changed",
    "added",
    "removed",
)


class Side(BaseModel):
    """One of the two things compared."""

    source: str = Field(description="The path given, or a description of the live object.")
    name: str
    framework: str
    weights_only: bool
    tensors: int
    parameters: int


class DiffEntry(BaseModel):
    """One tensor, aligned across the two sides, and how it differs."""

    name: str = Field(description="Tensor key on side A (side B's for an 'added' tensor).")
    name_a: str | None
    name_b: str | None
    layer: str = Field(description="Layer name on side A (side B's for an 'added' tensor).")
    layer_b: str | None
    param: str
    match: Match
    status: Status
    shape_a: list[int] | None
    shape_b: list[int] | None
    dtype_a: str | None
    dtype_b: str | None
    numel: int | None = None
    changed_count: int | None = None
    fraction_changed: float | None = None
    max_abs_diff: float | None = None
    relative_l2: float | None = None
    cosine_similarity: float | None = None
    norm_a: float | None = None
    norm_b: float | None = None
    diff_l2: float | None = None
    nonfinite_mismatches: int | None = None
    shared_a: list[str] | None = Field(
        default=None, description="A shared tensor on side A: every layer.param reading it.")
    shared_b: list[str] | None = Field(
        default=None, description="A shared tensor on side B: every layer.param reading it.")


class LayerDiff(BaseModel):
    """One aligned pair of layers (or a layer found on one side only)."""

    name: str
    layer_a: str | None
    layer_b: str | None
    kind_a: str | None
    kind_b: str | None
    match: Match
    status: Status
    tensors: int
    relative_l2: float | None = Field(description="||B - A|| / ||A|| over the layer's tensors.")
    max_abs_diff: float | None


class DiffSummary(BaseModel):
    """Counts and the headline: which layer moved most."""

    tensors: int
    counts: dict[str, int] = Field(description="Tensors per status (every status present).")
    layers: int
    layers_identical: int
    most_changed_layer: str | None
    most_changed_relative_l2: float | None


class DiffReport(BaseModel):
    """The result of ``weightio.analysis.diff``; ``to_json()`` gives the stable JSON shape."""

    format: Literal["weightio.diff/1"] = DIFF_FORMAT
    a: Side
    b: Side
    atol: float
    rtol: float
    alignment: Literal["key", "name", "position", "mixed", "none"]
    identical: bool = Field(description="True when every tensor is 'identical' within tolerance.")
    summary: DiffSummary
    layers: list[LayerDiff]
    entries: list[DiffEntry]

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to the documented JSON shape (floats that are not finite become null)."""
        return self.model_dump_json(indent=indent)

    def changed(self) -> list[DiffEntry]:
        """Entries whose status is not ``identical``."""
        return [e for e in self.entries if e.status != "identical"]


# -- alignment ----------------------------------------------------------------------------

Pair = tuple[LayerBase | None, LayerBase | None, Match]


def _compatible(a: LayerBase, b: LayerBase) -> bool:
    if a.kind != b.kind and "opaque" not in (a.kind, b.kind):
        return False
    return bool(set(a.tensor_refs()) & set(b.tensor_refs()))


def align_layers(spec_a: ModelSpec, spec_b: ModelSpec) -> list[Pair]:
    """Pair the parameterised layers of two specs (see the module docstring for the rules)."""
    la = [layer for layer in spec_a.layers if layer.tensor_refs()]
    lb = [layer for layer in spec_b.layers if layer.tensor_refs()]
    by_name_b = {layer.name: layer for layer in lb}
    names_a = {layer.name for layer in la}
    if len(la) == len(lb) and names_a == set(by_name_b):
        return [(layer, by_name_b[layer.name], "name") for layer in la]
    if len(la) == len(lb) and all(_compatible(x, y) for x, y in zip(la, lb)):
        return [(x, y, "position") for x, y in zip(la, lb)]
    rest_a = [layer for layer in la if layer.name not in by_name_b]
    rest_b = [layer for layer in lb if layer.name not in names_a]
    positional: dict[str, LayerBase] = {}
    unpaired_b = list(rest_b)
    for x, y in zip(rest_a, rest_b):
        if not _compatible(x, y):
            break
        positional[x.name] = y
        unpaired_b.remove(y)
    pairs: list[Pair] = []
    for layer in la:
        if layer.name in by_name_b:
            pairs.append((layer, by_name_b[layer.name], "name"))
        elif layer.name in positional:
            pairs.append((layer, positional[layer.name], "position"))
        else:
            pairs.append((layer, None, "none"))
    pairs.extend((None, layer, "none") for layer in unpaired_b)
    return pairs


def _align_by_key(spec_a: ModelSpec, spec_b: ModelSpec) -> list[tuple[Any, Any, str, Match]]:
    """Weights-only on both sides: tensors pair by state-dict key."""
    refs_b = {ref.key: (layer, param, ref) for layer, param, ref in spec_b.tensor_refs()}
    seen: set[str] = set()
    out: list[tuple[Any, Any, str, Match]] = []
    for layer, param, ref in spec_a.tensor_refs():
        other = refs_b.get(ref.key)
        if other is None:
            out.append(((layer, ref), (None, None), param, "none"))
        else:
            seen.add(ref.key)
            out.append(((layer, ref), (other[0], other[2]), param, "key"))
    for key, (layer, param, ref) in refs_b.items():
        if key not in seen:
            out.append(((None, None), (layer, ref), param, "none"))
    return out


def _tensor_pairs(pairs: list[Pair]) -> list[tuple[Any, Any, str, Match]]:
    out: list[tuple[Any, Any, str, Match]] = []
    for la, lb, match in pairs:
        refs_a = la.tensor_refs() if la is not None else {}
        refs_b = lb.tensor_refs() if lb is not None else {}
        for param, ref in refs_a.items():
            out.append(
                ((la, ref), (lb, refs_b.get(param)), param, match if param in refs_b else "none")
            )
        for param, ref in refs_b.items():
            if param not in refs_a:
                out.append(((la, None), (lb, ref), param, "none"))
    return out


# -- comparison ---------------------------------------------------------------------------


def _nbytes(ref: TensorRef) -> int:
    return math.prod(ref.shape) * itemsize(ref.dtype)


def _needs_figures(side_a: Any, side_b: Any) -> bool:
    ra, rb = side_a[1], side_b[1]
    return ra is not None and rb is not None and tuple(ra.shape) == tuple(rb.shape)


def _entry(
    side_a: Any,
    side_b: Any,
    param: str,
    match: Match,
    figures: Comparison | None,
) -> DiffEntry:
    la, ra = side_a
    lb, rb = side_b
    base: dict[str, Any] = {
        "name": (ra or rb).key,
        "name_a": ra.key if ra else None,
        "name_b": rb.key if rb else None,
        "layer": la.name if la is not None else lb.name,
        "layer_b": lb.name if lb else None,
        "param": param,
        "match": match,
        "shape_a": list(ra.shape) if ra else None,
        "shape_b": list(rb.shape) if rb else None,
        "dtype_a": ra.dtype if ra else None,
        "dtype_b": rb.dtype if rb else None,
    }
    if ra is None:
        return DiffEntry(status="added", **base)
    if rb is None:
        return DiffEntry(status="removed", **base)
    if figures is None:
        return DiffEntry(status="shape_changed", **base)
    if ra.dtype != rb.dtype:
        status: Status = "dtype_changed"
    else:
        status = "identical" if figures.changed_count == 0 else "changed"
    return DiffEntry(status=status, **base, **figures.model_dump())


def _layer_status(entries: list[DiffEntry]) -> Status:
    statuses = {e.status for e in entries}
    if statuses == {"identical"}:
        return "identical"
    for only in ("added", "removed"):
        if statuses == {only}:
            return only  # type: ignore[return-value]
    for worst in ("shape_changed", "dtype_changed"):
        if worst in statuses:
            return worst  # type: ignore[return-value]
    return "changed"


def _layer_diffs(
    entries: list[DiffEntry], kinds: dict[tuple[str, str | None], tuple[Any, Any, Match]]
) -> list[LayerDiff]:
    groups: dict[tuple[str, str | None], list[DiffEntry]] = {}
    for entry in entries:
        key = (entry.layer, entry.layer_b)
        groups.setdefault(key, []).append(entry)
    layers = []
    for (name, name_b), group in groups.items():
        la, lb, match = kinds.get((name, name_b), (None, None, "none"))
        compared = [e for e in group if e.diff_l2 is not None]
        norm_a = math.sqrt(sum((e.norm_a or 0.0) ** 2 for e in compared))
        diff = math.sqrt(sum((e.diff_l2 or 0.0) ** 2 for e in compared))
        relative = None
        if compared:
            relative = diff / norm_a if norm_a > 0 else (0.0 if diff == 0 else None)
        worst = [e.max_abs_diff for e in compared if e.max_abs_diff is not None]
        layers.append(
            LayerDiff(
                name=name,
                layer_a=la.name if la is not None else None,
                layer_b=name_b,
                kind_a=la.kind if la is not None else None,
                kind_b=lb.kind if lb is not None else None,
                match=match,
                status=_layer_status(group),
                tensors=len(group),
                relative_l2=relative,
                max_abs_diff=max(worst) if worst else None,
            )
        )
    return layers


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Archive):
        return os.fspath(source.path) if source.path else f"archive {source.spec.name!r}"
    return f"{type(source).__module__}.{type(source).__qualname__}"


def _side(source: Any, archive: Archive) -> Side:
    spec = archive.spec
    return Side(
        source=_describe(source),
        name=spec.name,
        framework=spec.provenance.source_framework,
        weights_only=spec.weights_only,
        tensors=sum(1 for _ in spec.unique_tensor_refs()),
        parameters=archive.parameter_count,
    )


def diff_archives(
    archive_a: Archive,
    archive_b: Archive,
    *,
    source_a: Any = None,
    source_b: Any = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    progress: bool = False,
) -> DiffReport:
    """Compare two archives layer by layer and tensor by tensor (see ``weightio.diff``).

    ``source_a``/``source_b`` are what the archives were read from (a path or an object), named
    in the report; the tolerances and ``progress`` are as ``weightio.diff`` documents them.
    """
    atol = check_tolerance("atol", atol)
    rtol = check_tolerance("rtol", rtol)
    spec_a, spec_b = archive_a.spec, archive_b.spec
    kinds: dict[tuple[str, str | None], tuple[Any, Any, Match]] = {}
    if spec_a.weights_only and spec_b.weights_only:
        tensor_pairs = _align_by_key(spec_a, spec_b)
        for (la, _), (lb, _), _, match in tensor_pairs:
            kinds[((la or lb).name, lb.name if lb else None)] = (la, lb, match)
        alignment_modes = {"key"} if tensor_pairs else set()
    else:
        layer_pairs = align_layers(spec_a, spec_b)
        tensor_pairs = _tensor_pairs(layer_pairs)
        for la, lb, match in layer_pairs:
            kinds[((la or lb).name, lb.name if lb else None)] = (la, lb, match)  # type: ignore[union-attr]
        alignment_modes = {m for la, lb, m in layer_pairs if la is not None and lb is not None}
    compared = [(sa, sb) for sa, sb, _, _ in tensor_pairs if _needs_figures(sa, sb)]
    total = sum(_nbytes(sa[1]) + _nbytes(sb[1]) for sa, sb in compared)
    entries: list[DiffEntry] = []
    with byte_progress("diff", total, enabled=progress) as advance:
        arrays = [(archive_a.tensors[sa[1].key], archive_b.tensors[sb[1].key]) for sa, sb in compared]
        figures = compare_pairs(arrays, atol=atol, rtol=rtol, on_bytes=advance)
        try:
            for side_a, side_b, param, match in tensor_pairs:
                found = next(figures) if _needs_figures(side_a, side_b) else None
                entries.append(_entry(side_a, side_b, param, match, found))
        finally:
            figures.close()  # joins the worker threads
    shared_a, shared_b = spec_a.shared_tensors(), spec_b.shared_tensors()
    for entry in entries:  # a shared tensor shows in each layer reading it, marked as shared
        entry.shared_a = shared_a.get(entry.name_a or "")
        entry.shared_b = shared_b.get(entry.name_b or "")
    layers = _layer_diffs(entries, kinds)
    counts = {status: sum(1 for e in entries if e.status == status) for status in STATUSES}
    moved = [
        layer for layer in layers if layer.status != "identical" and layer.relative_l2 is not None
    ]
    top = max(moved, key=lambda layer: layer.relative_l2 or 0.0, default=None)
    alignment = (
        next(iter(alignment_modes))
        if len(alignment_modes) == 1
        else ("mixed" if alignment_modes else "none")
    )
    return DiffReport(
        a=_side(archive_a if source_a is None else source_a, archive_a),
        b=_side(archive_b if source_b is None else source_b, archive_b),
        atol=atol,
        rtol=rtol,
        alignment=alignment,  # type: ignore[arg-type]
        identical=all(e.status == "identical" for e in entries),
        summary=DiffSummary(
            tensors=len(entries),
            counts=counts,
            layers=len(layers),
            layers_identical=sum(1 for layer in layers if layer.status == "identical"),
            most_changed_layer=top.name if top else None,
            most_changed_relative_l2=top.relative_l2 if top else None,
        ),
        layers=layers,
        entries=entries,
    )
