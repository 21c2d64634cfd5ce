"""``weightio.cast``: change the float dtype of an archive's weights, refusing any overflow.

A cast is the one place weightio changes numbers on purpose, so it says exactly what changed:

* **float -> float only.** ``F16``/``BF16``/``F32``/``F64`` tensors are cast; integer and bool
  tensors (embedding tables of indices, BatchNorm's ``num_batches_tracked``), float8 and complex
  tensors are left as they are and listed as untouched.
* **Overflow is refused.** A finite value that would become +-inf (``1e5`` in float16, whose
  largest value is 65504) raises ``UnsupportedDtypeError`` naming every such tensor and its count
  of overflowing values, before anything is built. bfloat16 keeps float32's range; or scale the
  weights first.
* **Underflow is reported.** Non-zero values that become zero are counted per tensor (a model
  whose tiny weights vanish in float16 is worth knowing about, not necessarily wrong).
* **NaN and +-inf stay what they are.** NaN stays NaN (its sign kept), +inf stays +inf, -inf stays
  -inf; they are counted and reported, since NaN weights make every output they touch NaN.

The result records its history: ``provenance.transforms`` gains one line per cast, the spec's
``verification`` records (made for the old weights) are dropped -- the line says which targets
they proved -- and every cast ``TensorRef`` gets its new dtype (its digest is refreshed when
the archive is written). When every float tensor ends up in one dtype, the model's float inputs
are declared in it too, as the readers do for a model read in that dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import SpecValidationError, UnsupportedDtypeError, WeightioError
from weightio.format.archive import Archive
from weightio.spec import spec_from_data
from weightio.spec.dtypes import FLOAT_DTYPE_NAMES, dtype_name, numpy_dtype
from weightio.spec.model import ModelSpec

__all__ = ["CastResult", "TensorCast", "cast", "cast_dtype_name"]

#: What users type -> safetensors dtype name.
_ALIASES = {
    "float16": "F16", "f16": "F16", "half": "F16", "fp16": "F16",
    "bfloat16": "BF16", "bf16": "BF16",
    "float32": "F32", "f32": "F32", "float": "F32", "fp32": "F32",
    "float64": "F64", "f64": "F64", "double": "F64", "fp64": "F64",
}
_FRIENDLY = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_CHUNK = 1 << 22  # elements per step, so counting never holds more than a few masks of 4M


def cast_dtype_name(dtype: Any) -> str:
    """``"float16"``, ``"F16"``, ``np.float16`` or ``ml_dtypes.bfloat16`` -> ``"F16"``.

    Raises:
        UnsupportedDtypeError: not one of float16, bfloat16, float32, float64.
    """
    if isinstance(dtype, str):
        upper = dtype.upper()
        name = _ALIASES.get(dtype.lower(), upper if upper in FLOAT_DTYPE_NAMES else None)
    else:
        try:
            name = dtype_name(np.dtype(dtype))
        except (TypeError, WeightioError):
            name = None
    if name not in FLOAT_DTYPE_NAMES:
        raise UnsupportedDtypeError(
            f"cannot cast to {dtype!r}; weightio casts float weights to float16, bfloat16, "
            "float32 or float64"
        )
    return name


@dataclass(frozen=True)
class TensorCast:
    """What happened to one tensor: dtypes and counts of values that changed kind."""

    key: str
    layer: str
    source_dtype: str
    dtype: str
    size: int
    underflow: int = 0
    nan: int = 0
    posinf: int = 0
    neginf: int = 0

    @property
    def nonfinite(self) -> int:
        """NaN and +-inf values in the source (carried over as they are)."""
        return self.nan + self.posinf + self.neginf


@dataclass
class CastResult:
    """The cast archive and what changed; ``str(result)`` / ``summary()`` say it in words."""

    archive: Archive
    dtype: str
    cast: list[TensorCast] = field(default_factory=list)
    unchanged: list[TensorCast] = field(default_factory=list)
    untouched: dict[str, str] = field(default_factory=dict)
    dropped_verification: list[str] = field(default_factory=list)

    @property
    def underflow(self) -> int:
        """Non-zero values that became zero, over all cast tensors."""
        return sum(t.underflow for t in self.cast)

    @property
    def nonfinite(self) -> list[TensorCast]:
        """Tensors (cast or not) holding NaN or +-inf."""
        return [t for t in [*self.cast, *self.unchanged] if t.nonfinite]

    def to_json(self) -> str:
        """The result for machines: every tensor cast or kept, with its counts."""
        import dataclasses
        import json

        return json.dumps({
            "dtype": self.dtype,
            "cast": [dataclasses.asdict(t) for t in self.cast],
            "unchanged": [dataclasses.asdict(t) for t in self.unchanged],
            "untouched": self.untouched,
            "underflow": self.underflow,
            "dropped_verification": self.dropped_verification,
        }, indent=2)

    def summary(self) -> list[str]:
        """Lines for the CLI."""
        values = sum(t.size for t in self.cast)
        sources = sorted({t.source_dtype for t in self.cast})
        lines = [
            f"cast {len(self.cast)} tensor(s), {values:,} values, from "
            f"{'/'.join(sources) or 'nothing'} to {self.dtype}"
        ]
        if self.unchanged:
            lines.append(
                f"already {self.dtype} or outside --layer: {len(self.unchanged)} tensor(s) kept"
            )
        if self.untouched:
            kinds = ", ".join(f"{key} ({dt})" for key, dt in list(self.untouched.items())[:8])
            more = f" and {len(self.untouched) - 8} more" if len(self.untouched) > 8 else ""
            lines.append(f"not float, left untouched: {kinds}{more}")
        if self.underflow:
            worst = sorted(self.cast, key=lambda t: -t.underflow)
            detail = ", ".join(f"{t.key}: {t.underflow}" for t in worst if t.underflow)
            lines.append(f"underflow: {self.underflow} non-zero value(s) became 0 ({detail})")
        else:
            lines.append("underflow: none")
        for t in self.nonfinite:
            lines.append(
                f"non-finite in source, kept as they are: {t.key}: {t.nan} NaN, {t.posinf} +inf, "
                f"{t.neginf} -inf"
            )
        if self.dropped_verification:
            lines.append(
                "dropped the recorded verification ("
                f"{', '.join(self.dropped_verification)}): it proved the old weights, not these"
            )
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary())


def _counts(source: np.ndarray, target: np.dtype) -> tuple[np.ndarray, int, int, int, int, int, int]:
    """The cast array and counts: overflow, underflow, NaN, +inf, -inf, worst overflowing |x|."""
    flat = np.ascontiguousarray(source).reshape(-1)
    out = np.empty(flat.shape, dtype=target)
    overflow = underflow = nan = posinf = neginf = 0
    worst = 0.0
    for start in range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # counted below
            cast = part.astype(target)
        out[start:start + _CHUNK] = cast
        wide = part.astype(np.float64)
        finite = np.isfinite(wide)
        landed = cast.astype(np.float64)
        over = finite & ~np.isfinite(landed)
        if over.any():
            overflow += int(over.sum())
            worst = max(worst, float(np.abs(wide[over]).max()))
        underflow += int(np.count_nonzero(finite & (wide != 0) & (landed == 0)))
        nan += int(np.isnan(wide).sum())
        posinf += int(np.count_nonzero(wide == np.inf))
        neginf += int(np.count_nonzero(wide == -np.inf))
    return out.reshape(source.shape), overflow, underflow, nan, posinf, neginf, worst


def _nonfinite(array: np.ndarray) -> tuple[int, int, int]:
    wide = np.asarray(array).astype(np.float64, copy=False)
    return int(np.isnan(wide).sum()), int((wide == np.inf).sum()), int((wide == -np.inf).sum())


def _open(source: Any, options: dict[str, Any]) -> tuple[Archive, Any]:
    if isinstance(source, Archive):
        return source, source.path
    from weightio.verbs.read import read

    return read(source, **options), source if isinstance(source, (str, os.PathLike)) else None


def _selected(spec: ModelSpec, layers: Iterable[str] | None, file: Any) -> set[str] | None:
    if layers is None:
        return None
    wanted = [layers] if isinstance(layers, str) else list(layers)
    names = {layer.name for layer in spec.layers}
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise SpecValidationError(
            f"no layer named {', '.join(map(repr, unknown))}; the archive's layers are "
            f"{', '.join(sorted(names)[:20])}{' …' if len(names) > 20 else ''}",
            file=file,
        )
    return set(wanted)


def cast(
    source: Any, dtype: Any, *, layers: Iterable[str] | None = None, **read_options: Any
) -> CastResult:
    """Cast the float weights of ``source`` to ``dtype``; refuse if any value would overflow.

    Args:
        source: An ``Archive``, a path to one, or anything ``weightio.read`` accepts.
        dtype: ``"float16"``, ``"bfloat16"``, ``"float32"`` or ``"float64"`` (or ``"F16"`` …,
            or a numpy / ml_dtypes dtype).
        layers: Only these layers' tensors (by layer name); default: every layer.
        **read_options: Passed to ``weightio.read`` when ``source`` is not an archive
            (e.g. ``trust_pickle=True``, ``key=``).

    Returns:
        A ``CastResult``: ``.archive`` (not yet saved; ``weightio.save`` it), the tensors cast
        with their underflow and NaN/Inf counts, the tensors left untouched (not float).

    Raises:
        UnsupportedDtypeError: ``dtype`` is not a float dtype, or finite values would overflow
            to +-inf (every such tensor is named with its count).
        SpecValidationError: ``layers`` names a layer the archive does not have.
    """
    target_name = cast_dtype_name(dtype)
    target = numpy_dtype(target_name)
    archive, file = _open(source, read_options)
    try:
        return _cast(archive, target_name, target, _selected(archive.spec, layers, file), file)
    except WeightioError as exc:
        raise (exc.with_file(file) if file is not None else exc) from None


def _cast(
    archive: Archive, name: str, target: np.dtype, only: set[str] | None, file: Any
) -> CastResult:
    result = CastResult(archive=archive, dtype=name)
    arrays: dict[str, np.ndarray] = {}
    overflows: list[tuple[str, int, int, float]] = []
    new_dtypes: dict[str, str] = {}
    for layer, _param, ref in archive.spec.unique_tensor_refs():
        array = archive.tensors[ref.key]
        arrays[ref.key] = array
        if ref.dtype not in FLOAT_DTYPE_NAMES:
            result.untouched[ref.key] = ref.dtype
            continue
        size = int(array.size)
        if ref.dtype == name or (only is not None and layer.name not in only):
            result.unchanged.append(TensorCast(ref.key, layer.name, ref.dtype, ref.dtype, size,
                                               0, *_nonfinite(array)))
            continue
        out, overflow, underflow, nan, posinf, neginf, worst = _counts(array, target)
        if overflow:
            overflows.append((ref.key, overflow, size, worst))
            continue
        arrays[ref.key] = out
        new_dtypes[ref.key] = name
        result.cast.append(TensorCast(ref.key, layer.name, ref.dtype, name, size, underflow, nan,
                                      posinf, neginf))
    if overflows:
        total = sum(count for _, count, _, _ in overflows)
        detail = "; ".join(f"{key}: {count} of {size} (largest |x| {worst:.6g})"
                           for key, count, size, worst in overflows)
        friendly = _FRIENDLY[name]
        raise UnsupportedDtypeError(
            f"casting to {friendly} would overflow {total} values to +-inf (finite in the "
            f"source: {detail}); {friendly}'s largest value is {float(_finfo_max(target)):.6g}. "
            "Nothing was cast. Cast to bfloat16 "
            "(float32's range) instead, or scale these weights (and compensate downstream) first",
            file=file,
            tensor=overflows[0][0] if len(overflows) == 1 else None,
        )
    spec = _cast_spec(archive.spec, new_dtypes, name, result)
    result.archive = Archive(spec, arrays)
    return result


def _finfo_max(dtype: np.dtype) -> Any:
    import ml_dtypes

    return ml_dtypes.finfo(dtype).max


def _cast_spec(
    spec: ModelSpec, new_dtypes: dict[str, str], name: str, result: CastResult
) -> ModelSpec:
    """The spec with the cast refs' dtypes, a provenance line, and no stale verification."""
    data = spec.model_dump(mode="json")

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("key"), str) and node["key"] in new_dtypes and "dtype" in node:
                node["dtype"] = new_dtypes[node["key"]]
                node["sha256"] = None
                node["digest"] = None
                return
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(data["layers"])
    final = {ref.dtype if ref.key not in new_dtypes else new_dtypes[ref.key]
             for _, _, ref in spec.tensor_refs() if ref.dtype in FLOAT_DTYPE_NAMES}
    if new_dtypes and final == {name}:
        for inp in data["inputs"]:
            if inp.get("dtype") in FLOAT_DTYPE_NAMES:
                inp["dtype"] = name
    sources = sorted({t.source_dtype for t in result.cast})
    line = (f"cast: {len(result.cast)} float tensor(s) from {'/'.join(sources) or '-'} to {name} "
            f"(underflow to 0: {result.underflow}; non-float tensors untouched: "
            f"{len(result.untouched)})")
    data["provenance"]["transforms"] = [*data["provenance"].get("transforms", []), line]
    if new_dtypes and data.get("verification"):
        result.dropped_verification = [record["target"] for record in data["verification"]]
        data["provenance"]["transforms"].append(
            f"cast: dropped verification records ({', '.join(result.dropped_verification)}) "
            "made for the weights before the cast"
        )
        data["verification"] = []
    return spec_from_data(data)
