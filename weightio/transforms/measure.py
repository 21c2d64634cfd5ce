"""What a transform cost: the original and the transformed archive run on the same probes.

Both archives run through the numpy runtime (``weightio.runtime``) on the seeded probe inputs
every conversion proof uses (``weightio.runtime.probes``). For each output we take the worst
absolute change ``max |y' - y|`` and the worst change relative to the output's scale,
``max |y' - y| / max |y|``; for an output of shape ``[batch, classes]`` (two or more columns) the
share of probe inputs whose top class stayed the same (top-1 agreement). Several outputs: the
worst of each figure. A weights-only archive has no architecture to run: the measurement then
says that no outputs were compared, and ``--max-change`` cannot refuse it.

``record`` writes the transform and its figures into ``provenance.transforms`` and drops the
spec's verification records, which proved the old weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from weightio.errors import VerificationError
from weightio.format.archive import Archive, with_refs
from weightio.options import check_count, check_seed, check_tolerance
from weightio.runtime.forward import run
from weightio.runtime.probes import probe_inputs
from weightio.spec import spec_from_data
from weightio.spec.dtypes import itemsize
from weightio.spec.model import ModelSpec

__all__ = [
    "Measurement", "TransformResult", "check_measure_options", "finish", "measure", "record",
    "refuse_above", "stored_size",
]

#: What a weights-only measurement says instead of figures.
NOT_COMPARED = "no outputs compared: the archive holds weights only, with no architecture to run"


@dataclass(frozen=True)
class Measurement:
    """How far a transform moved the outputs on ``samples`` seeded probes (``seed``)."""

    compared: bool
    seed: int
    samples: int
    worst_abs: float | None = None
    worst_rel: float | None = None
    top1_agreement: float | None = None
    note: str | None = None

    def line(self) -> str:
        """One line: the figures, or why there are none."""
        if not self.compared:
            return self.note or NOT_COMPARED
        text = (f"on {self.samples} seeded probes (seed {self.seed}): worst abs output change "
                f"{self.worst_abs:.3g}, worst rel {self.worst_rel:.3g}")
        if self.top1_agreement is not None:
            text += f", top-1 agreement {self.top1_agreement:.1%}"
        return text


@dataclass
class TransformResult:
    """A transformed archive and what happened: per-layer rows, sizes, the measurement.

    ``archive`` is not yet saved (``weightio.save`` it); ``layers`` holds one dict per layer
    touched (its keys depend on the transform); ``size_before``/``size_after`` are the bytes of
    every tensor as stored.
    """

    transform: str
    archive: Archive
    measurement: Measurement
    layers: list[dict[str, Any]] = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0
    notes: list[str] = field(default_factory=list)
    parameters_before: int = 0
    parameters_after: int = 0

    def summary(self) -> list[str]:
        """Lines for the CLI."""
        lines = [f"{self.transform}: {self.notes[0]}" if self.notes else self.transform]
        lines += self.notes[1:]
        lines.append(
            f"parameters {self.parameters_before:,} -> {self.parameters_after:,}; "
            f"size {_bytes(self.size_before)} -> {_bytes(self.size_after)}"
        )
        lines.append(f"outputs: {self.measurement.line()}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The result for machines."""
        return {
            "transform": self.transform, "notes": self.notes, "layers": self.layers,
            "parameters_before": self.parameters_before, "parameters_after": self.parameters_after,
            "size_before": self.size_before, "size_after": self.size_after,
            "measurement": asdict(self.measurement),
        }

    def __str__(self) -> str:
        return "\n".join(self.summary())


def _bytes(size: int) -> str:
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= step:
            return f"{size / step:.2f} {unit}"
    return f"{size} B"


def check_measure_options(seed: int, samples: int, max_change: float | None) -> None:
    """Refuse a bad seed, sample count or ``max_change`` before any work."""
    check_seed(seed)
    check_count("samples", samples)
    if max_change is not None:
        check_tolerance("max_change", max_change)


def measure(original: Archive, transformed: Archive, *, seed: int = 0, samples: int = 8) -> Measurement:
    """Run both archives on the same seeded probes and compare every output."""
    if original.spec.weights_only or transformed.spec.weights_only:
        return Measurement(compared=False, seed=seed, samples=samples, note=NOT_COMPARED)
    probes = probe_inputs(original.spec, seed=seed, samples=samples)
    before = _outputs(original, probes)
    after = _outputs(transformed, probes)
    worst_abs = worst_rel = 0.0
    agreement: float | None = None
    for ref, got in zip(before, after):
        ref64 = np.asarray(ref, dtype=np.float64)
        got64 = np.asarray(got, dtype=np.float64)
        if ref64.shape != got64.shape:
            raise VerificationError(
                f"the transformed model's output has shape {list(got64.shape)}, the original's "
                f"{list(ref64.shape)}; a transform must keep the outputs' shapes (internal error)"
            )
        with np.errstate(invalid="ignore"):
            diff = np.abs(got64 - ref64)
        abs_change = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
        if np.isnan(diff).any() and not np.array_equal(np.isnan(ref64), np.isnan(got64)):
            abs_change = math.inf
        scale = float(np.nanmax(np.abs(ref64), initial=0.0)) if ref64.size else 0.0
        worst_abs = max(worst_abs, abs_change)
        worst_rel = max(worst_rel, abs_change / scale if scale > 0 else abs_change)
        if ref64.ndim == 2 and ref64.shape[1] >= 2 and ref64.shape[0]:
            share = float(np.mean(np.argmax(ref64, axis=1) == np.argmax(got64, axis=1)))
            agreement = share if agreement is None else min(agreement, share)
    return Measurement(compared=True, seed=seed, samples=samples, worst_abs=worst_abs,
                       worst_rel=worst_rel, top1_agreement=agreement)


def _outputs(archive: Archive, probes: list[np.ndarray]) -> list[np.ndarray]:
    out = run(archive, probes if len(probes) > 1 else probes[0])
    return out if isinstance(out, list) else [out]


def refuse_above(measurement: Measurement, max_change: float | None, transform: str) -> None:
    """``VerificationError`` when the worst relative output change exceeds ``max_change``."""
    if max_change is None or not measurement.compared:
        return
    assert measurement.worst_rel is not None
    if not measurement.worst_rel <= max_change:
        raise VerificationError(
            f"{transform} moved the outputs by {measurement.worst_rel:.3g} (worst change relative "
            f"to the output's scale, {measurement.line()}), more than max_change={max_change:g}; "
            "nothing was written"
        )


def record(spec_data: dict[str, Any], lines: list[str], measurement: Measurement) -> ModelSpec:
    """``spec_data`` (a spec's JSON data, already transformed) with the transform's lines and
    its measurement in ``provenance.transforms``, and no verification records (they proved the
    weights before the transform).
    """
    transforms = [*spec_data["provenance"].get("transforms", [])]
    name = lines[0].split(":", 1)[0] if lines else "transform"
    transforms += lines
    transforms.append(f"{name}: measured {measurement.line()}")
    if spec_data.get("verification"):
        targets = ", ".join(r["target"] for r in spec_data["verification"])
        transforms.append(f"{name}: dropped verification records ({targets}) made for the weights before it")
        spec_data["verification"] = []
    spec_data["provenance"]["transforms"] = transforms
    return spec_from_data(spec_data)


def stored_size(archive: Archive) -> int:
    """Bytes of every tensor as the archive stores it."""
    return sum(math.prod(ref.shape) * itemsize(ref.dtype) for _, _, ref in archive.spec.stored_refs())


def _undigested(ref: Any) -> Any:
    update: dict[str, Any] = {"digest": None, "sha256": None}
    if ref.encoding is not None:
        update["encoding"] = ref.encoding.model_copy(update={
            "scale": _undigested(ref.encoding.scale),
            "zero_point": None if ref.encoding.zero_point is None else _undigested(ref.encoding.zero_point),
        })
    return ref.model_copy(update=update)


def finish(
    transform: str,
    original: Archive,
    spec_data: dict[str, Any],
    tensors: dict[str, np.ndarray],
    lines: list[str],
    *,
    layers: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
) -> TransformResult:
    """Build the transformed archive from ``spec_data`` and ``tensors``, measure it against
    ``original``, refuse it above ``max_change`` (``VerificationError``, nothing returned to
    write), and record ``lines`` and the figures in its provenance.
    """
    spec_data["layers"] = [layer.model_dump(mode="json") for layer in with_refs(
        spec_from_data(spec_data), _undigested)]
    candidate = Archive(spec_from_data(spec_data), tensors)  # digests are recorded when saved
    measurement = measure(original, candidate, seed=seed, samples=samples)
    refuse_above(measurement, max_change, transform)
    spec = record(candidate.spec.model_dump(mode="json"), lines, measurement)
    archive = candidate.with_spec(spec)
    return TransformResult(
        transform=transform, archive=archive, measurement=measurement, layers=layers or [],
        size_before=stored_size(original), size_after=stored_size(archive), notes=notes or [],
        parameters_before=original.parameter_count, parameters_after=archive.parameter_count,
    )
