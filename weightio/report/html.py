"""One self-contained HTML page for ``inspect --html`` and ``diff --html``.

Everything is inline: the CSS, a small sorting script, and the plots as base64 PNGs. A
Content-Security-Policy forbids every network fetch, so the page renders the same offline, from an
e-mail attachment or a CI artifact. The table is rendered on the server side (readable without
JavaScript); the script sorts it, initially and on a click on any header, and records what it did
in ``data-sorted-by`` / ``data-rows`` on the table (a test checks them in headless Chromium).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from weightio.format.atomic import atomic_write
from weightio.report.text import fmt, summary_line
from weightio.terminal import printable

if TYPE_CHECKING:  # pragma: no cover
    from weightio.analysis.diff import DiffReport
    from weightio.analysis.inspect import Inspection
    from weightio.format.archive import Archive

#: Histograms embedded in an inspect page at most (the PNG folder from ``plot`` has them all).
MAX_HISTOGRAMS = 48


@dataclass
class Column:
    """A table column: its header, a stable key, and whether it sorts as numbers."""

    title: str
    key: str
    numeric: bool = False


@dataclass
class Cell:
    """A table cell: what is shown, and the value it sorts by (None sorts last)."""

    text: str
    sort: float | str | None = None


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:24px 0 8px}
.summary{border-collapse:collapse;margin-bottom:12px} .summary td{padding:2px 12px 2px 0}
.summary td:first-child{color:#666}
#wio-table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
#wio-table th,#wio-table td{border:1px solid #ddd;padding:3px 8px;text-align:left}
#wio-table td.num{text-align:right}
#wio-table th{background:#f0f3f8;cursor:pointer;user-select:none;position:sticky;top:0}
#wio-table th[aria-sort=ascending]::after{content:" \\25B2"}
#wio-table th[aria-sort=descending]::after{content:" \\25BC"}
tr.identical td.status{color:#2e7d32} tr.changed td.status{color:#b26a00}
tr.bad td.status{color:#c62828;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0} figcaption{font-size:12px;color:#666}
img{max-width:100%;border:1px solid #eee}
.verdict{font-size:15px;font-weight:600} .ok{color:#2e7d32} .differ{color:#c62828}
"""

_SCRIPT = """
(function () {
  var table = document.getElementById("wio-table");
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function value(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell.getAttribute("data-sort");
    if (raw === null) raw = cell.textContent;
    if (!numeric) return raw;
    return raw === "" ? NaN : parseFloat(raw);
  }
  function sortBy(col, dir) {
    var numeric = heads[col].getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      if (numeric) {
        var nx = isNaN(x), ny = isNaN(y);
        if (nx || ny) return (nx ? 1 : 0) - (ny ? 1 : 0);
        return dir * (x - y);
      }
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    heads[col].setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    table.setAttribute("data-sorted-by", heads[col].getAttribute("data-key"));
    table.setAttribute("data-sort-dir", dir > 0 ? "asc" : "desc");
    table.setAttribute("data-rows", String(rows.length));
  }
  Array.prototype.forEach.call(heads, function (head, i) {
    head.addEventListener("click", function () {
      sortBy(i, head.getAttribute("aria-sort") === "ascending" ? -1 : 1);
    });
  });
  sortBy(INITIAL_COLUMN, INITIAL_DIRECTION);
})();
"""

_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)


def _e(text: object) -> str:
    """Text from a file in HTML: markup escaped, and (as on a terminal) control and bidi
    characters shown as escapes, so a name displays as what it is.
    """
    return html.escape(printable(text), quote=True)


def _sort_attr(value: float | str | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ' data-sort=""'
    return f' data-sort="{_e(value)}"'


def page(
    *,
    title: str,
    heading_html: str,
    summary: Sequence[tuple[str, str]],
    columns: Sequence[Column],
    rows: Sequence[tuple[str, Sequence[Cell]]],
    images: Sequence[tuple[str, bytes]],
    initial_sort: tuple[int, int] = (0, 1),
    table_title: str = "Tensors",
    charts_html: str = "",
) -> str:
    """Assemble the page. ``rows`` are ``(css class, cells)``; ``initial_sort`` is (column, ±1);
    ``charts_html`` (inline SVG, already escaped) goes after the table.
    """
    head = "".join(
        f'<th data-key="{_e(c.key)}" data-type="{"num" if c.numeric else "text"}">{_e(c.title)}</th>'
        for c in columns
    )
    body = []
    for css, cells in rows:
        tds = "".join(
            f'<td class="{"num" if col.numeric else ""}{" status" if col.key == "status" else ""}"'
            f"{_sort_attr(cell.sort) if col.numeric or cell.sort is not None else ''}>{_e(cell.text)}</td>"
            for col, cell in zip(columns, cells)
        )
        body.append(f'<tr class="{_e(css)}">{tds}</tr>')
    summary_html = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in summary)
    figures = "".join(
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{_e(caption)}</figcaption></figure>'
        for caption, data in images
    )
    script = _SCRIPT.replace("INITIAL_COLUMN", str(int(initial_sort[0]))).replace(
        "INITIAL_DIRECTION", "1" if initial_sort[1] >= 0 else "-1"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'{heading_html}<table class="summary">{summary_html}</table>'
        f'<h2>{_e(table_title)}</h2><p style="font-size:12px;color:#666">Click a column header to sort.</p>'
        f'<table id="wio-table" data-rows="0"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>{charts_html}"
        + (f'<h2>Plots</h2><div class="plots">{figures}</div>' if figures else "")
        + f"<script>{script}</script></body></html>\n"
    )


def _num(value: float | None, spec: str = ".4g") -> Cell:
    return Cell(fmt(value, spec), value)


def inspect_page(report: Inspection, archive: Archive, *, plots: bool = True) -> str:
    """The inspect page: model summary, a sortable tensor table with statistics, the plots."""
    columns = [
        Column("#", "index", True),
        Column("tensor", "tensor"),
        Column("layer", "layer"),
        Column("kind", "kind"),
        Column("settings", "settings"),
        Column("output", "output"),
        Column("shape", "shape"),
        Column("dtype", "dtype"),
        Column("count", "count", True),
        Column("mean", "mean", True),
        Column("std", "std", True),
        Column("min", "min", True),
        Column("max", "max", True),
        Column("L2", "l2", True),
        Column("zeros", "zeros", True),
        Column("NaN", "nan", True),
        Column("Inf", "inf", True),
    ]
    rows = []
    index = 0
    for layer in report.layers:
        output = "-" if layer.output_shape is None else "×".join(
            "?" if d is None else str(d) for d in layer.output_shape)
        for t in layer.tensors:
            index += 1
            s = t.stats
            rows.append(
                (
                    "",
                    [
                        Cell(str(index), index),
                        Cell(t.key),
                        Cell(layer.name),
                        Cell(layer.kind),
                        Cell(layer.detail or "-"),
                        Cell(output),
                        Cell(str(t.shape) + (" (buffer)" if t.role == "buffer" else "")),
                        Cell(t.dtype),
                        Cell(f"{t.count:,}", t.count),
                        _num(s.mean if s else None),
                        _num(s.std if s else None),
                        _num(s.min if s else None),
                        _num(s.max if s else None),
                        _num(s.l2 if s else None),
                        Cell(
                            "-" if s is None else f"{s.zero_fraction:.1%}",
                            s.zero_fraction if s else None,
                        ),
                        Cell("-" if s is None else str(s.nan_count), s.nan_count if s else None),
                        Cell("-" if s is None else str(s.inf_count), s.inf_count if s else None),
                    ],
                )
            )
    summary = [
        ("model", report.name),
        (
            "source",
            f"{report.source_framework}"
            + (f" ({report.source_class})" if report.source_class else ""),
        ),
        ("inputs", ", ".join(
            f"{i['name']} (batch, {', '.join('?' if d is None else str(d) for d in i['shape'])})"
            for i in report.inputs) or "-"),
        ("outputs", ", ".join(str(o["name"]) for o in report.outputs) or "-"),
        ("layers", f"{len(report.layers)}"),
        ("parameters", f"{report.parameter_count:,} ({report.trainable_count:,} trainable, "
                       f"{report.buffer_count:,} in non-trainable buffers)"),
        ("bytes", ", ".join(f"{d}: {n:,}" for d, n in report.bytes_by_dtype.items()) or "none"),
    ]
    if report.weights_only:
        summary.append(("architecture", "none (weights only, from a bare state dict)"))
    images: list[tuple[str, bytes]] = []
    if plots:
        from weightio.report import plots as p

        for caption, make in (
            ("L2 norm per layer", p.layer_norms),
            ("input-feature importance", p.feature_importance),
        ):
            png = make(archive)
            if png is not None:
                images.append((caption, png))
        layers = [layer for layer in archive.spec.layers if layer.tensor_refs()]
        for layer in layers[:MAX_HISTOGRAMS]:
            images.append((f"{layer.name}: value histograms", p.layer_histogram(archive, layer)))
            for param, ref in layer.tensor_refs().items():
                grid = p.filter_grid(archive.tensors[ref.key], f"{layer.name}.{param}")
                if grid is not None:
                    images.append((f"{layer.name}.{param}: filters", grid))
    heading = f"<h1>weightio inspect: {_e(report.name)}</h1>"
    return page(
        title=f"weightio inspect: {report.name}",
        heading_html=heading,
        summary=summary,
        columns=columns,
        rows=rows,
        images=images,
        initial_sort=(0, 1),
    )


def diff_page(report: DiffReport, *, plots: bool = True) -> str:
    """The diff page: verdict and summary, a sortable table (most changed first), the plot."""
    columns = [
        Column("#", "index", True),
        Column("tensor (A)", "tensor"),
        Column("tensor (B)", "tensor_b"),
        Column("status", "status"),
        Column("match", "match"),
        Column("shape", "shape"),
        Column("max |Δ|", "max_abs_diff", True),
        Column("‖Δ‖/‖A‖", "relative_l2", True),
        Column("cosine", "cosine_similarity", True),
        Column("changed", "fraction_changed", True),
    ]
    rows = []
    for index, e in enumerate(report.entries, start=1):
        css = e.status if e.status in ("identical", "changed") else "bad"
        shape = e.shape_a if e.shape_a is not None else e.shape_b
        shape_text = (
            str(shape)
            if e.shape_a in (None, e.shape_b) or e.shape_b is None
            else f"{e.shape_a} → {e.shape_b}"
        )
        rows.append(
            (
                css,
                [
                    Cell(str(index), index),
                    Cell(e.name_a or "-"),
                    Cell(e.name_b or "-"),
                    Cell(e.status),
                    Cell(e.match),
                    Cell(shape_text),
                    _num(e.max_abs_diff),
                    _num(e.relative_l2),
                    _num(e.cosine_similarity, ".6f"),
                    Cell(
                        "-" if e.fraction_changed is None else f"{e.fraction_changed:.1%}",
                        e.fraction_changed,
                    ),
                ],
            )
        )
    s = report.summary
    summary = [
        ("A", f"{report.a.source} ({report.a.framework}, {report.a.parameters:,} parameters)"),
        ("B", f"{report.b.source} ({report.b.framework}, {report.b.parameters:,} parameters)"),
        ("tolerance", f"|B − A| ≤ {report.atol:g} + {report.rtol:g}·|A|"),
        ("aligned by", report.alignment),
        ("tensors", ", ".join(f"{n} {status}" for status, n in s.counts.items() if n) or "none"),
        ("layers", f"{s.layers_identical} of {s.layers} identical"),
        (
            "most changed layer",
            "-"
            if s.most_changed_layer is None
            else f"{s.most_changed_layer} (‖Δ‖/‖A‖ = {fmt(s.most_changed_relative_l2)})",
        ),
    ]
    images: list[tuple[str, bytes]] = []
    if plots:
        from weightio.report.plots import diff_relative_change

        png = diff_relative_change(report)
        if png is not None:
            images.append(("relative change per layer", png))
    # summary_line starts with the verdict itself ("different (atol=0, …): …"): said once
    heading = (
        f'<h1>weightio diff</h1><p class="verdict {"ok" if report.identical else "differ"}">'
        f"{_e(summary_line(report))}</p>"
    )
    return page(
        title="weightio diff",
        heading_html=heading,
        summary=summary,
        columns=columns,
        rows=rows,
        images=images,
        initial_sort=(7, -1),
    )


def write_html(text: str, path: Path) -> Path:
    """Write the page atomically."""
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))
    return path
