"""Text renderings: rich tables for inspect and diff, plain text for explain.

Names come from files: every string a table shows is a ``Cell`` of
``weightio.terminal.printable(...)`` (``cell``; rich draws it as a ``rich.text.Text``), and the
console has markup, emoji codes and highlighting off, so ``[bold red]``, ``[/x]``, ``:smile:``,
ANSI escapes and bidi overrides in a layer or tensor name are shown literally, never interpreted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightio.report.plain import Cell, PlainConsole
from weightio.terminal import printable

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from weightio.analysis.diff import DiffReport
    from weightio.analysis.inspect import Inspection


def fmt(value: float | None, spec: str = ".4g") -> str:
    """Format a figure, ``-`` for a missing one."""
    return "-" if value is None else format(value, spec)


def console() -> Console | PlainConsole:
    """A rich console on stdout; wide when piped, so tables are not squeezed to 80 columns.

    Markup, emoji codes and highlighting are off: everything printed is text. Piped (no
    terminal, so no colour), it is a ``PlainConsole``: the same characters, without rich.
    """
    from weightio.report.plain import PIPED_WIDTH, PlainConsole, plain_output_possible

    if plain_output_possible():
        return PlainConsole(PIPED_WIDTH)
    import sys

    from rich.console import Console

    options = {"markup": False, "emoji": False, "highlight": False}
    return Console(**options) if sys.stdout.isatty() else Console(width=PIPED_WIDTH, **options)


def cell(value: object, style: str = "") -> Cell:
    """A table cell or line: ``value`` made printable, as text (never markup) with a style
    for colour terminals (rich draws it as ``Text(…, style=style)``).
    """
    return Cell(printable(value), style)


def shape_text(shape: list[int] | None) -> str:
    """``[8, 3, 3, 3]`` -> ``8×3×3×3`` (``scalar`` for ``[]``, ``-`` for none)."""
    if shape is None:
        return "-"
    return "×".join(map(str, shape)) or "scalar"


#: The order in which ``inspect --stats`` gives up columns on a narrow terminal.
_STATS_DROP_ORDER = ("kind", "L2", "zeros", "min", "max", "dtype", "count")


def columns_that_fit(columns: tuple[str, ...], rows: list[tuple[str, ...]], width: int) -> list[int]:
    """The indices of the columns to show so the table fits ``width`` characters: the widest
    table first, then columns dropped in ``_STATS_DROP_ORDER`` until it fits (tensor, shape,
    mean, std and NaN/Inf always stay).
    """
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    keep = list(range(len(columns)))

    def total(indices: list[int]) -> int:  # each cell is padded by 1 each side, plus borders
        return sum(widths[i] + 3 for i in indices) + 1

    for name in _STATS_DROP_ORDER:
        if total(keep) <= width:
            break
        if name in columns:
            keep.remove(columns.index(name))
    return keep


def human_bytes(count: int) -> str:
    """``1536`` -> ``1.5 KB``: powers of 1024, as Keras summary() and torchinfo print sizes."""
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


#: How the table's title names ``inspect --native``'s parameters.
_NATIVE = {"keras": "Keras' names and shapes", "torch": "PyTorch state-dict keys and shapes",
           "file": "the file's own names"}


def print_inspection(report: Inspection, console: Console | PlainConsole) -> None:
    """The ``inspect`` table: one row per layer, or one per tensor when stats were read."""
    from weightio.report.table import Table

    with_stats = any(t.stats is not None for layer in report.layers for t in layer.tensors)
    dropped: list[str] = []
    names = "" if report.names == "canonical" else f", {_NATIVE.get(report.names, report.names)}"
    table = Table(title=cell(f"{report.name} ({report.source_framework}{names})"))
    if not with_stats:
        for column in ("layer", "kind", "output", "parameters", "dtype", "count", "size", "detail"):
            table.add_column(column, justify="right" if column in ("count", "size") else "left")
        for layer in report.layers:
            shapes = ", ".join(
                f"{t.param}{t.shape}" + (" (buffer)" if t.role == "buffer" else "")
                + (f" = {t.key} (shared)" if t.shared_by else "")
                for t in layer.tensors
            ) or "-"
            dtypes = ", ".join(sorted({t.dtype for t in layer.tensors})) or "-"
            output = "-" if layer.output_shape is None else shape_text(layer.output_shape)
            size = human_bytes(sum(t.nbytes for t in layer.tensors)) if layer.tensors else "-"
            table.add_row(*map(cell, (
                layer.name, layer.kind, output, shapes, dtypes, f"{layer.parameter_count:,}", size,
                layer.detail,
            )))
    else:
        columns = ("tensor", "kind", "shape", "dtype", "count", "mean", "std", "min", "max", "L2",
                   "zeros", "NaN/Inf")
        rows = []
        for layer in report.layers:
            if not layer.tensors:
                rows.append((layer.name, layer.kind, "-", "-", "0", *["" for _ in range(7)]))
            for t in layer.tensors:
                s = t.stats
                assert s is not None
                rows.append((
                    t.key, layer.kind, shape_text(t.shape), t.dtype, f"{t.count:,}", fmt(s.mean),
                    fmt(s.std), fmt(s.min), fmt(s.max), fmt(s.l2), f"{s.zero_fraction:.1%}",
                    f"{s.nan_count}/{s.inf_count}",
                ))
        keep = columns_that_fit(columns, rows, console.width)
        for index in keep:
            column = columns[index]
            table.add_column(column, justify="left" if column in {"tensor", "kind", "shape", "dtype"} else "right")
        for row in rows:
            table.add_row(*(cell(row[i]) for i in keep))
        dropped = [columns[i] for i in range(len(columns)) if i not in keep]
    console.print(table)
    if with_stats and dropped:
        console.print(cell(f"not shown at this width: {', '.join(dropped)} (--json has every column)"))
    sizes = ", ".join(f"{d} {human_bytes(n)}" for d, n in report.bytes_by_dtype.items())
    split = (f" ({report.trainable_count:,} trainable, {report.buffer_count:,} in non-trainable "
             "buffers)" if report.buffer_count else "")
    console.print(cell(f"{report.parameter_count:,} parameters{split}; "
                       f"{human_bytes(report.total_bytes)}" + (f" ({sizes})" if sizes else "")))
    shared = {t.key: t.shared_by for layer in report.layers for t in layer.tensors if t.shared_by}
    for key, readers in list(shared.items())[:8]:
        console.print(cell(f"shared tensor {key}: read by {', '.join(readers)} (stored and counted once)"))
    if report.nonfinite:
        nans = sum(t.nan for t in report.nonfinite)
        infs = sum(t.inf for t in report.nonfinite)
        where = ", ".join(f"{t.key} ({t.nan} NaN, {t.inf} Inf)" for t in report.nonfinite[:8])
        more = f" and {len(report.nonfinite) - 8} more" if len(report.nonfinite) > 8 else ""
        console.print(cell(f"non-finite values: {nans:,} NaN, {infs:,} Inf, kept bit-exact, in {where}{more}"))
    elif report.nonfinite is None:
        console.print(cell("NaN/Inf not checked (large archive); run with --stats to read every tensor"))
    if report.weights_only:
        console.print(cell("weights only: no architecture (read from a bare state dict)"))


def print_diff(report: DiffReport, console: Console | PlainConsole) -> None:
    """The ``diff`` table: one row per tensor, then the summary."""
    from weightio.report.table import Table

    table = Table(title=cell(f"{report.a.source}  vs  {report.b.source}  (aligned by {report.alignment})"))
    for column in ("tensor", "status", "shape", "max |Δ|", "‖Δ‖/‖A‖", "cosine", "changed"):
        table.add_column(column, justify="left" if column in {"tensor", "status", "shape"} else "right")
    styles = {"identical": "green", "changed": "yellow"}
    for e in report.entries:
        name = e.name if e.name_b in (None, e.name) else f"{e.name} ↔ {e.name_b}"
        if e.shared_a or e.shared_b:
            name += f" (shared, in {e.layer})"
        shape = shape_text(e.shape_a if e.shape_a is not None else e.shape_b)
        if e.shape_a is not None and e.shape_b is not None and e.shape_a != e.shape_b:
            shape = f"{shape_text(e.shape_a)} → {shape_text(e.shape_b)}"
        if e.dtype_a and e.dtype_b and e.dtype_a != e.dtype_b:
            shape += f" {e.dtype_a}→{e.dtype_b}"
        table.add_row(
            cell(name), cell(e.status, styles.get(e.status, "red")), cell(shape),
            *map(cell, (fmt(e.max_abs_diff), fmt(e.relative_l2), fmt(e.cosine_similarity, ".6f"),
                        "-" if e.fraction_changed is None else f"{e.fraction_changed:.1%}")),
        )
    console.print(table)
    console.print(cell(summary_line(report)))


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


