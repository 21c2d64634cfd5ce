"""The ``track --html`` page: the per-layer table and one curve per layer, as inline SVG.

Built on ``weightio.report.html.page`` (its CSS, sorting script and Content-Security-Policy: no
network fetch). The curves are SVG drawn here, not PNGs, so the page needs no matplotlib and a
browser test can read them: each ``<polyline>`` carries ``data-layer`` and ``data-points``.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from weightio.report.html import Cell, Column, page
from weightio.report.text import fmt
from weightio.terminal import printable

if TYPE_CHECKING:  # pragma: no cover
    from weightio.batch.tracking import TrackReport

#: Colours of the curves, in layer order (repeated past ten layers).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT, PAD = 760, 300, 48


def _e(text: object) -> str:
    return html.escape(printable(text), quote=True)


def _chart(report: TrackReport, metric: str, title: str, *, log: bool) -> str:
    """One SVG chart of ``metric`` against step, one polyline per layer, with a legend."""
    series = []
    for layer in report.layers:
        points = [(c.step, getattr(c, metric)) for c in layer.curve]
        points = [(s, v) for s, v in points if v is not None and math.isfinite(v) and (v > 0 or not log)]
        series.append((layer.name, points))
    values = [v for _, points in series for _, v in points]
    steps = report.steps
    if not values or len(steps) < 2:
        return ""
    lo, hi = (min(values), max(values))
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    if hi <= lo:
        hi = lo + 1.0
    x0, x1 = steps[0], steps[-1]

    def x(step: float) -> float:
        return PAD + (step - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def y(value: float) -> float:
        v = math.log10(value) if log else value
        return HEIGHT - PAD - (v - lo) / (hi - lo) * (HEIGHT - 2 * PAD)

    lines = []
    for index, (name, points) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
        lines.append(f'<polyline class="curve" data-layer="{_e(name)}" data-points="{len(points)}" '
                     f'fill="none" stroke="{colour}" stroke-width="2" points="{coords}">'
                     f"<title>{_e(name)}</title></polyline>")
    scale = "log₁₀ scale" if log else "linear scale"
    axis = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
            f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">step {x0}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="end">step {x1}</text>'
            f'<text x="{PAD - 4}" y="{PAD}" font-size="11" text-anchor="end">'
            f"{_e(fmt(10 ** hi if log else hi, '.3g'))}</text>"
            f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" font-size="11" text-anchor="end">'
            f"{_e(fmt(10 ** lo if log else lo, '.3g'))}</text>")
    legend = "".join(
        f'<span style="margin-right:12px"><span style="display:inline-block;width:12px;height:3px;'
        f'background:{PALETTE[i % len(PALETTE)]};vertical-align:middle"></span> {_e(name)}</span>'
        for i, (name, _) in enumerate(series)
    )
    return (f'<h2>{_e(title)}</h2><figure class="chart" data-metric="{_e(metric)}">'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}">{axis}{"".join(lines)}</svg>'
            f'<figcaption>{_e(scale)}; one curve per layer. {legend}</figcaption></figure>')


def track_page(report: TrackReport) -> str:
    """The page: summary, the per-layer table (most moved first), then the curves."""
    columns = [
        Column("#", "index", True), Column("layer", "layer"), Column("kind", "kind"),
        Column("parameters", "parameters", True), Column("‖W−W₀‖/‖W₀‖ (last)", "from_first", True),
        Column("‖ΔW‖/‖W‖ mean", "mean_update_ratio", True), Column("‖ΔW‖/‖W‖ last", "last_update_ratio", True),
        Column("stopped after step", "stopped_at", True), Column("dead units", "dead_units", True),
    ]
    rows = []
    for index, layer in enumerate(report.layers, start=1):
        css = "bad" if layer.stopped_at is not None or layer.dead_units else "changed"
        rows.append((css, [
            Cell(str(index), index), Cell(layer.name), Cell(layer.kind),
            Cell(f"{layer.parameters:,}", layer.parameters),
            Cell(fmt(layer.final_from_first), layer.final_from_first),
            Cell(fmt(layer.mean_update_ratio), layer.mean_update_ratio),
            Cell(fmt(layer.last_update_ratio), layer.last_update_ratio),
            Cell("-" if layer.stopped_at is None else str(layer.stopped_at), layer.stopped_at),
            Cell(f"{layer.dead_units}/{layer.units}" if layer.units else "-", layer.dead_units),
        ]))
    s = report.summary
    summary = [
        ("checkpoints", f"{len(report.steps)} (steps {report.steps[0]} to {report.steps[-1]})"),
        ("moved most", s.most_moved or "-"), ("moved least", s.least_moved or "-"),
        ("stopped", ", ".join(s.stopped) or "none"),
        ("dead units in", ", ".join(s.with_dead_units) or "none"),
        ("left out", ", ".join(f"{e.source} ({e.error.type})" for e in report.errors if e.error) or "none"),
    ]
    charts = (_chart(report, "from_first", "Relative change from the first checkpoint", log=False)
              + _chart(report, "update_ratio", "Update norm over weight norm", log=True))
    return page(
        title="weightio track", heading_html="<h1>weightio track</h1>", summary=summary,
        columns=columns, rows=rows, images=[], initial_sort=(4, -1), table_title="Layers",
        charts_html=charts,
    )
