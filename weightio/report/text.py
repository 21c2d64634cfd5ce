"""Text renderings: rich tables for inspect and diff, plain text for explain."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from weightio.diff import DiffReport
    from weightio.explain import Explanation, Values
    from weightio.inspection import Inspection


def fmt(value: float | None, spec: str = ".4g") -> str:
    """Format a figure, ``-`` for a missing one."""
    return "-" if value is None else format(value, spec)


def console() -> Console:
    """A rich console on stdout; wide when piped, so tables are not squeezed to 80 columns."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def shape_text(shape: list[int] | None) -> str:
    """``[8, 3, 3, 3]`` -> ``8×3×3×3`` (``scalar`` for ``[]``, ``-`` for none)."""
    if shape is None:
        return "-"
    return "×".join(map(str, shape)) or "scalar"


def print_inspection(report: Inspection, console: Console) -> None:
    """The ``inspect`` table: one row per layer, or one per tensor when stats were read."""
    from rich.table import Table

    with_stats = any(t.stats is not None for layer in report.layers for t in layer.tensors)
    table = Table(title=f"{report.name} ({report.source_framework})")
    if not with_stats:
        for column in ("layer", "kind", "parameters", "dtype", "count", "detail"):
            table.add_column(column, justify="right" if column == "count" else "left")
        for layer in report.layers:
            shapes = ", ".join(f"{t.param}{t.shape}" for t in layer.tensors) or "-"
            dtypes = ", ".join(sorted({t.dtype for t in layer.tensors})) or "-"
            table.add_row(
                layer.name, layer.kind, shapes, dtypes, f"{layer.parameter_count:,}", layer.detail
            )
    else:
        columns = ("tensor", "kind", "shape", "dtype", "count", "mean", "std", "min", "max", "L2",
                   "zeros", "NaN/Inf")
        for column in columns:
            table.add_column(column, justify="left" if column in {"tensor", "kind", "shape", "dtype"} else "right")
        for layer in report.layers:
            if not layer.tensors:
                table.add_row(layer.name, layer.kind, "-", "-", "0", *["" for _ in range(7)])
            for t in layer.tensors:
                s = t.stats
                assert s is not None
                table.add_row(
                    t.key, layer.kind, shape_text(t.shape), t.dtype, f"{t.count:,}", fmt(s.mean), fmt(s.std),
                    fmt(s.min), fmt(s.max), fmt(s.l2), f"{s.zero_fraction:.1%}",
                    f"{s.nan_count}/{s.inf_count}",
                )
    console.print(table)
    sizes = ", ".join(f"{d}: {n:,} bytes" for d, n in report.bytes_by_dtype.items()) or "no tensors"
    console.print(f"{report.parameter_count:,} parameters; {sizes}")
    if report.nonfinite:
        nans = sum(t.nan for t in report.nonfinite)
        infs = sum(t.inf for t in report.nonfinite)
        where = ", ".join(f"{t.key} ({t.nan} NaN, {t.inf} Inf)" for t in report.nonfinite[:8])
        more = f" and {len(report.nonfinite) - 8} more" if len(report.nonfinite) > 8 else ""
        console.print(f"non-finite values: {nans:,} NaN, {infs:,} Inf, kept bit-exact, in {where}{more}")
    elif report.nonfinite is None:
        console.print("NaN/Inf not checked (large archive); run with --stats to read every tensor")
    if report.weights_only:
        console.print("weights only: no architecture (read from a bare state dict)")


def print_diff(report: DiffReport, console: Console) -> None:
    """The ``diff`` table: one row per tensor, then the summary."""
    from rich.table import Table

    table = Table(title=f"{report.a.source}  vs  {report.b.source}  (aligned by {report.alignment})")
    for column in ("tensor", "status", "shape", "max |Δ|", "‖Δ‖/‖A‖", "cosine", "changed"):
        table.add_column(column, justify="left" if column in {"tensor", "status", "shape"} else "right")
    styles = {"identical": "green", "changed": "yellow"}
    for e in report.entries:
        name = e.name if e.name_b in (None, e.name) else f"{e.name} ↔ {e.name_b}"
        shape = shape_text(e.shape_a if e.shape_a is not None else e.shape_b)
        if e.shape_a is not None and e.shape_b is not None and e.shape_a != e.shape_b:
            shape = f"{shape_text(e.shape_a)} → {shape_text(e.shape_b)}"
        if e.dtype_a and e.dtype_b and e.dtype_a != e.dtype_b:
            shape += f" {e.dtype_a}→{e.dtype_b}"
        table.add_row(
            name, f"[{styles.get(e.status, 'red')}]{e.status}[/]", shape, fmt(e.max_abs_diff),
            fmt(e.relative_l2), fmt(e.cosine_similarity, ".6f"),
            "-" if e.fraction_changed is None else f"{e.fraction_changed:.1%}",
        )
    console.print(table)
    console.print(summary_line(report))


def summary_line(report: DiffReport) -> str:
    """One line: the verdict, the counts, the layer that moved most."""
    s = report.summary
    counts = ", ".join(f"{n} {status}" for status, n in s.counts.items() if n)
    tol = f"atol={report.atol:g}, rtol={report.rtol:g}"
    verdict = "identical" if report.identical else "different"
    line = f"{verdict} ({tol}): {s.tensors} tensors: {counts or 'none'}"
    if s.most_changed_layer is not None:
        line += f"; most changed layer: {s.most_changed_layer} (‖Δ‖/‖A‖ = {fmt(s.most_changed_relative_l2)})"
    return line


def _block(label: str, values: Values, indent: str = "    ") -> list[str]:
    shape = "×".join(map(str, values.shape)) or "scalar"
    text = values.text.replace("\n", "\n" + indent + " " * (len(label) + 2))
    lines = [f"{indent}{label}: {text}   [{shape}]"]
    if values.abbreviated and values.min is not None:
        lines.append(f"{indent}{' ' * (len(label) + 2)}(abbreviated; min {values.min:.6g}, max {values.max:.6g})")
    return lines


def explanation_text(explanation: Explanation) -> str:
    """The forward pass as a learner would write it out by hand."""
    out = [f"Forward pass of {explanation.model!r}, sample {explanation.sample} (float64 inside)", ""]
    for name, values in explanation.inputs.items():
        out += _block(f"input {name}", values, indent="")
    for step in explanation.steps:
        cls = f" ({step.source_class})" if step.source_class else ""
        out += ["", f"step {step.index}: {step.layer} — {step.kind}{cls}"]
        out.append(f"    formula: {step.layer} = {step.formula}")
        out += _block(f"x = {', '.join(step.inputs)}", step.input)
        labels = {"weight": "W", "bias": "b"}
        for param, values in step.parameters.items():
            out += _block(labels.get(param, param), values)
        if step.expansion:
            out.append("    by hand, unit by unit: [u] = W[u,0]·x[0] + W[u,1]·x[1] + … + b[u]")
            out += [f"      {line}" for line in step.expansion]
        if step.pre_activation is not None:
            out += _block("pre-activation x · Wᵀ + b", step.pre_activation)
        out += _block("output", step.output)
    out.append("")
    for name, values in explanation.outputs.items():
        out += _block(f"model output {name} (= weightio.run)", values, indent="")
    return "\n".join(out) + "\n"
