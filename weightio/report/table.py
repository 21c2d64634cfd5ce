"""A table drawn like ``rich.table.Table``'s default, for tables of hundreds of rows.

``rich.table.Table`` styles, highlights, measures and wraps every cell through its renderables
machinery: ~0.15 s for the ~200-row ``inspect`` table of a transformer checkpoint, more than
reading its header. Without colour (output piped to a file or a program, or ``NO_COLOR``) none of
that shows, so when every row fits on one line the table here lays the same cells out in one
pass as plain text: the same box characters, padding, title and cell markup as rich's default
(``box.HEAVY_HEAD``; a test compares the two character for character). On a colour terminal, or
when a row would need wrapping, it is rich's own table. ``weightio.report.plain.PlainConsole``
writes the same lines without importing rich at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


class Table:
    """``add_column(header, justify=)`` and ``add_row(*cells)`` as rich's; ``console.print(it)``."""

    def __init__(self, title: Any = None) -> None:
        self.title = title
        self.columns: list[tuple[str, str]] = []
        self.rows: list[tuple[Any, ...]] = []

    def add_column(self, header: str, justify: str = "left") -> None:
        """Add a column (``justify``: left, center or right)."""
        self.columns.append((header, justify))

    def add_row(self, *cells: Any) -> None:
        """Add a row of cells: ``weightio.report.plain.Cell`` (text), or strings (rich markup)."""
        self.rows.append(tuple(cells))

    def _rich(self) -> Any:
        from rich.protocol import rich_cast
        from rich.table import Table as RichTable

        # cells are ``weightio.report.plain.Cell`` (text, never markup) or markup strings
        table = RichTable(title=None if self.title is None else rich_cast(self.title))  # type: ignore[arg-type]
        for header, justify in self.columns:
            table.add_column(header, justify=justify)  # type: ignore[arg-type]
        for row in self.rows:
            table.add_row(*(rich_cast(cell) for cell in row))  # type: ignore[arg-type]
        return table

    def __rich_console__(self, console: Console, options: Any) -> Any:
        """Rich's own table on a colour terminal; without colour (piped, ``NO_COLOR``) the same
        layout as one plain ``Text``, laid out in one pass.
        """
        lines = None
        if console.color_system is None:
            lines = self.plain_lines(lambda value: _plain(console, value), options.max_width)
        if lines is None:
            yield self._rich()
            return
        from rich.text import Text

        yield Text("\n".join(lines), no_wrap=True, overflow="ignore")

    def plain_lines(self, measure: Callable[[Any], tuple[str, int]], max_width: int) -> list[str] | None:
        """The lines rich's default table would draw without colour, or ``None`` when rich must
        lay it out (no columns, a row of another length, cells that would need wrapping).

        ``measure`` gives a cell's plain text and its width in terminal columns, as rich shows it.
        """
        if not self.columns:
            return None
        cells = [[measure(cell) for cell in row] for row in self.rows]
        headers = [measure(header) for header, _ in self.columns]
        widths = [width for _, width in headers]
        for row in cells:
            if len(row) != len(widths):
                return None
            for index, (_, width) in enumerate(row):
                widths[index] = max(widths[index], width)
        total = sum(widths) + 3 * len(widths) + 1
        if total > max_width:  # rich would wrap cells: let it
            return None
        justify = [j for _, j in self.columns]
        lines = []
        if self.title:
            title, width = measure(self.title)
            pad = max(0, total - width)
            lines.append(" " * (pad // 2) + title + " " * (pad - pad // 2))
        lines.append("┏" + "┳".join("━" * (w + 2) for w in widths) + "┓")
        lines.append(_line(headers, widths, justify, "┃", "┃"))
        lines.append("┡" + "╇".join("━" * (w + 2) for w in widths) + "┩")
        lines.extend(_line(row, widths, justify, "│", "│") for row in cells)
        lines.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
        return lines


def _plain(console: Console, value: Any) -> tuple[str, int]:
    """A cell's plain text and width; cells may be rich ``Text`` (already rendered) or markup."""
    if not isinstance(value, str):  # a rich Text: rich>=15's cell_len takes only str
        return value.plain, value.cell_len
    if "[" not in value and ":" not in value:
        from rich.cells import cell_len

        return value, cell_len(value)
    text = console.render_str(value, highlight=False)
    return text.plain, text.cell_len


def _line(row: list[tuple[str, int]], widths: list[int], justify: list[str], edge: str, inner: str) -> str:
    parts = []
    for (text, width), room, how in zip(row, widths, justify):
        pad = room - width
        left = pad if how == "right" else pad // 2 if how == "center" else 0
        parts.append(" " + " " * left + text + " " * (pad - left) + " ")
    return edge + inner.join(parts) + edge
