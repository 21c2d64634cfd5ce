"""Text renderings of batch results: the summary table of ``batch convert``, one line per file
as results arrive, the per-layer tables of ``track`` and of a run ``diff``.

Names come from files and are shown as text, never markup (``weightio.report.text.cell``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightio.report.table import Table
from weightio.report.text import cell, fmt, human_bytes

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from weightio.batch.conversion import BatchReport, FileResult
    from weightio.batch.runs import RunDiff
    from weightio.batch.tracking import TrackReport
    from weightio.report.plain import PlainConsole

_STYLES = {"converted": "green", "skipped": "cyan", "failed": "red"}


def result_line(result: FileResult) -> str:
    """One line for a file as its result arrives (stderr, while the batch runs)."""
    if result.error is not None:
        return f"failed    {result.source}: {result.error.type}: {result.error.message}"
    return f"{result.status:<9} {result.source} -> {result.destination} ({result.seconds:.2f} s)"


def print_batch(report: BatchReport, console: Console | PlainConsole) -> None:
    """The summary table: one row per file, failures with their error, then the totals."""
    table = Table(title=cell(f"batch convert into {report.out} ({report.scheduler}, "
                             f"{report.workers} worker(s))"))
    for column, justify in (("source", "left"), ("status", "left"), ("archive", "left"),
                            ("size", "right"), ("seconds", "right"), ("error", "left")):
        table.add_column(column, justify=justify)
    for r in report.files:
        table.add_row(
            cell(r.source), cell(r.status, _STYLES.get(r.status, "")),
            cell(r.destination if r.status != "failed" else "-"),
            cell(human_bytes(r.source_bytes) if r.source_bytes is not None else "-"),
            cell(f"{r.seconds:.2f}"),
            cell("" if r.error is None else f"{r.error.type}: {r.error.message}"),
        )
    console.print(table)
    c = report.counts
    rate = "" if not report.bytes_per_second else f", {human_bytes(int(report.bytes_per_second))}/s"
    console.print(cell(
        f"{c['converted']} converted, {c['skipped']} skipped (up to date), {c['failed']} failed "
        f"in {report.seconds:.1f} s ({human_bytes(report.source_bytes)} read{rate})"
    ))


def print_track(report: TrackReport, console: Console | PlainConsole) -> None:
    """Per layer: the last checkpoint's change from the first, the mean update ratio, when it
    stopped, its dead units; then one line per stopped layer and per layer with dead units.
    """
    table = Table(title=cell(f"track: {len(report.steps)} checkpoints, steps {report.steps[0]} "
                             f"to {report.steps[-1]}" if report.steps else "track: no checkpoints"))
    for column in ("layer", "params", "‖W−W₀‖/‖W₀‖", "‖ΔW‖/‖W‖ mean", "‖ΔW‖/‖W‖ last",
                   "stopped at", "dead units"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in report.layers:
        table.add_row(
            cell(layer.name), cell(f"{layer.parameters:,}"), cell(fmt(layer.final_from_first)),
            cell(fmt(layer.mean_update_ratio)), cell(fmt(layer.last_update_ratio)),
            cell("-" if layer.stopped_at is None else str(layer.stopped_at)),
            cell(f"{layer.dead_units}/{layer.units}" if layer.units else "-"),
        )
    console.print(table)
    moved = report.summary
    if moved.most_moved is not None:
        console.print(cell(f"moved most: {moved.most_moved}; least: {moved.least_moved} "
                           "(relative change from the first checkpoint to the last)"))
    for layer in report.layers:
        if layer.stopped_at is not None:
            console.print(cell(f"stopped: {layer.name} is unchanged from step {layer.stopped_at} on"))
        if layer.dead_units:
            console.print(cell(f"dead units: {layer.name} has {layer.dead_units} of {layer.units} "
                               f"units whose weights are all zero (from step {layer.dead_since})"))


def print_run_diff(report: RunDiff, console: Console | PlainConsole) -> None:
    """Per step both runs hold: the relative difference of each layer, B against A."""
    layers = report.layer_names()
    table = Table(title=cell(f"{report.a}  vs  {report.b}: {len(report.steps)} common step(s)"))
    table.add_column("step", justify="right")
    table.add_column("identical", justify="left")
    for name in layers:
        table.add_column(name, justify="right")
    for step in report.steps:
        row = [cell(str(step.step)), cell("yes" if step.identical else "no",
                                          "green" if step.identical else "yellow")]
        by_layer = {layer.name: layer.relative_l2 for layer in step.layers}
        row.extend(cell(fmt(by_layer.get(name))) for name in layers)
        table.add_row(*row)
    console.print(table)
    if report.only_a or report.only_b:
        console.print(cell(f"steps only in A: {report.only_a or '-'}; only in B: {report.only_b or '-'}"))
    for failure in report.errors:
        console.print(cell(f"failed: {failure.source}: {failure.type}: {failure.message}"))
    console.print(cell("runs identical at every common step" if report.identical
                       else f"runs differ at {sum(not s.identical for s in report.steps)} step(s); "
                       f"most: {report.most_different or '-'}"))
