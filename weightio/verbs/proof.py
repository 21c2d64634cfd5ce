"""Proof that a conversion computes the same numbers: several witnesses, stated tolerances.

The same seeded inputs go to the source model, the converted model and the numpy runtime. For
every output and every pair of witnesses we record the worst absolute difference and the worst
difference relative to the output's magnitude, and pass only when every element satisfies
``|a - b| <= atol * scale + rtol * |reference|`` with ``scale = max(1, max |reference|)``.
Tolerances come from the model's dtype and are never loosened silently: a caller who wants
looser ones passes them, and the record states what was used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from weightio.errors import WeightioError
from weightio.format.archive import Archive
from weightio.runtime.forward import forward, output_dtype
from weightio.runtime.probes import probe_inputs
from weightio.spec.model import ModelSpec, OutputCheck, VerificationRecord

#: Default (atol, rtol) by the model's floating dtype.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-7),
    "float32": (1e-5, 1e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


def default_tolerance(spec: ModelSpec) -> tuple[float, float]:
    """(atol, rtol) for the model's floating dtype."""
    return DEFAULT_TOLERANCES.get(output_dtype(spec).name, DEFAULT_TOLERANCES["float32"])


def compare(
    output: str,
    witnesses: tuple[str, str],
    reference: np.ndarray,
    other: np.ndarray,
    *,
    atol: float,
    rtol: float,
) -> OutputCheck:
    """Compare one output of two witnesses (``reference`` first)."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(other, dtype=np.float64)
    if ref.shape != got.shape:
        return OutputCheck(
            output=output,
            witnesses=witnesses,
            worst_abs=float("inf"),
            worst_rel=float("inf"),
            scale=0.0,
            passed=False,
        )
    finite = np.isfinite(ref) & np.isfinite(got)
    same_nonfinite = bool(np.all((ref == got) | finite | (np.isnan(ref) & np.isnan(got))))
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: masked out just below
        diff = np.where(finite, np.abs(ref - got), 0.0)
    scale = max(1.0, float(np.max(np.abs(np.where(finite, ref, 0.0)), initial=0.0)))
    worst = float(np.max(diff, initial=0.0))
    # NaN/inf in the same places in both is agreement (rtol * |NaN| must not fail it); but an
    # output with no finite reference value at all cannot witness anything, so it fails.
    bound = atol * scale + rtol * np.where(finite, np.abs(ref), 0.0)
    witnessed = bool(finite.any()) or ref.size == 0
    passed = same_nonfinite and witnessed and bool(np.all(diff <= bound))
    return OutputCheck(
        output=output,
        witnesses=witnesses,
        worst_abs=worst,
        worst_rel=worst / scale,
        scale=scale,
        passed=passed,
    )


def verify_conversion(
    archive: Archive,
    *,
    target: str,
    source_name: str | None,
    source_runner: Runner | None,
    target_runner: Runner | None,
    seed: int = 0,
    samples: int = 8,
    atol: float | None = None,
    rtol: float | None = None,
    source_not_run: str | None = None,
) -> VerificationRecord:
    """Run every available witness on the same probe and compare each pair with a reference.

    The reference is the source when it can be run (it is what the user trusts), else the numpy
    runtime. Every other witness is compared with it. The record says how much that proves:
    ``verified`` when the source ran (or is a weightio archive, whose function the numpy runtime
    is), ``partial`` when only weightio's own reading was compared with the target (then
    ``source_not_run`` says why), ``not verified`` when there was nothing to compare.
    """
    default_atol, default_rtol = default_tolerance(archive.spec)  # options checked by convert
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    inputs = probe_inputs(archive.spec, seed=seed, samples=samples)
    # The probe is canonical (feature maps channels-first); a side holding feature maps
    # channels-last (Keras) gets them transposed in, and its feature-map outputs transposed back.
    from weightio.layouts.flow import layout_of, runner_in_layout

    if source_runner is not None:
        source_runner = runner_in_layout(archive.spec, source_runner, layout_of(source_name))
    if target_runner is not None:
        target_runner = runner_in_layout(archive.spec, target_runner, layout_of(target))
    # The numpy runtime and the target run first: the source may be a witness process still
    # importing its framework (``frameworks.keras.witness``), so they run while it does.
    try:
        runtime_outputs, _ = forward(archive, inputs)
    except WeightioError:
        if source_runner is not None:
            # the source's own refusal (a config Keras may not load, named with its file) is
            # the one the user gets, as when the source ran first
            source_runner(inputs)
        raise
    others: list[tuple[str, Sequence[np.ndarray]]] = [("numpy", runtime_outputs)]
    if target_runner is not None:
        others.append((target, target_runner(inputs)))
    witnesses = others if source_runner is None else [
        (source_name or "source", source_runner(inputs)), *others]
    ref_name, ref_outputs = witnesses[0]
    checks = []
    for other_name, other_outputs in witnesses[1:]:
        for out, ref, got in zip(archive.spec.outputs, ref_outputs, other_outputs):
            checks.append(
                compare(out.name, (ref_name, other_name), ref, got, atol=atol, rtol=rtol)
            )
    source_ran = source_runner is not None or source_name == "weightio"
    status, note = _standing(checks, source_ran, source_not_run, target)
    return VerificationRecord(
        target=target,
        seed=seed,
        samples=samples,
        atol=atol,
        rtol=rtol,
        checks=checks,
        passed=bool(checks) and all(c.passed for c in checks),
        status=status,
        note=note,
    )


def unverified(
    archive: Archive, *, target: str, reason: str, seed: int = 0
) -> VerificationRecord:
    """The record of a conversion that compared nothing (``verify=False``, weights only)."""
    atol, rtol = default_tolerance(archive.spec)
    return VerificationRecord(
        target=target, seed=seed, samples=0, atol=atol, rtol=rtol, checks=[], passed=False,
        status="not verified", note=reason,
    )


def _standing(
    checks: list[OutputCheck], source_ran: bool, source_not_run: str | None, target: str
) -> tuple[Literal["verified", "partial", "not verified"], str | None]:
    why = source_not_run or "the source could not be run"
    if not checks and source_ran:  # a weightio archive to a target that cannot run here
        return "not verified", (
            f"the {target} target cannot be run here, and the numpy runtime alone has nothing "
            "to be compared with"
        )
    if not checks:
        return "not verified", (
            f"source not run ({why}) and the {target} target cannot be run here: only "
            "weightio's own reading exists, so nothing was compared"
        )
    if not source_ran:
        return "partial", (
            f"source not run ({why}): the {target} target was compared with the numpy runtime "
            "only, both built from weightio's reading of the source"
        )
    return "verified", None


def describe(record: VerificationRecord) -> list[str]:
    """One line per check, then what the proof covers when it is not a full one."""
    lines = [
        f"{c.output}: {c.witnesses[0]} vs {c.witnesses[1]}: worst abs {c.worst_abs:.3g}, "
        f"worst rel {c.worst_rel:.3g} (scale {c.scale:.3g}) {'ok' if c.passed else 'FAILED'}"
        for c in record.checks
    ]
    if record.status != "verified":
        lines.append(f"{record.status}: {record.note}")
    return lines
