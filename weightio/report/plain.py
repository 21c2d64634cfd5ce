"""Tables and lines for piped output, written without importing rich.

``weightio inspect`` of a 250-layer checkpoint piped into a file or a program spent ~70 ms of
its ~0.45 s in rich: importing ``rich.console`` (~30 ms) and rendering a ``Text`` per cell even
when the plain layout of ``weightio.report.table`` was used. Without a terminal there is no
colour to show, so ``PlainConsole`` writes what rich would write, character for character (the
tests render both), straight to stdout. Whatever it cannot lay out exactly as rich would (a line
rich would wrap, a string that rich reads as markup, an object that is not a table or a cell, an
output encoding that is not UTF-8) it hands to a rich ``Console`` made with the same options, so
the output is rich's by construction there.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.text import Text

    from weightio.report.table import Table

#: The width of a console that is not a terminal (``weightio.report.text.console``).
PIPED_WIDTH = 200


class Cell:
    """Text shown literally (never markup), with a rich style for colour terminals.

    rich renders it as ``Text(plain, style=style)`` (``__rich__``); ``PlainConsole`` writes
    ``plain`` without rich.
    """

    __slots__ = ("plain", "style")

    def __init__(self, plain: str, style: str = "") -> None:
        self.plain = plain
        self.style = style

    @property
    def cell_len(self) -> int:
        """Columns the text takes on a terminal (wide characters count two)."""
        return cell_width(self.plain)

    def __bool__(self) -> bool:  # as rich's Text: an empty title is no title
        return bool(self.plain)

    def __rich__(self) -> Text:
        from rich.text import Text

        return Text(self.plain, style=self.style)

    def __repr__(self) -> str:
        return f"Cell({self.plain!r})"


#: Characters weightio's own tables use beyond ASCII, each one column wide on any terminal.
_NARROW = frozenset("×→…·–—±µ")


def cell_width(text: str) -> int:
    """Rich's ``cell_len`` without importing rich where the answer is plain: ASCII, Latin-1 and
    Latin Extended letters (below U+0300, where combining marks start) and the few signs weightio
    prints (``8×6×6``) are one column each; anything else is measured by rich itself.
    """
    if text.isascii() or all((ord(c) < 0x300 and c.isprintable()) or c in _NARROW for c in text):
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def plain_output_possible() -> bool:
    """Whether rich would see no terminal on stdout (so it would print no colour): stdout is
    not a TTY and neither ``FORCE_COLOR`` nor ``TTY_COMPATIBLE=1`` asks for one, and stdout
    encodes UTF-8 (the table's box characters). Anything else keeps rich's console.
    """
    stream = sys.stdout
    try:
        if stream is None or stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    if os.environ.get("TTY_COMPATIBLE", "") == "1" or os.environ.get("FORCE_COLOR"):
        return False
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "").replace("_", "")
    return encoding == "utf8"


class PlainConsole:
    """``print`` and ``width`` of a rich ``Console(width=200, markup=False, emoji=False,
    highlight=False)`` on a non-terminal stdout, for tables and cells, without rich.
    """

    def __init__(self, width: int = PIPED_WIDTH) -> None:
        self.width = width
        self._rich: Console | None = None

    def rich_console(self) -> Console:
        """The rich console this one stands for, made on first need."""
        if self._rich is None:
            from rich.console import Console

            self._rich = Console(width=self.width, markup=False, emoji=False, highlight=False)
        return self._rich

    def print(self, item: Any) -> None:
        """Write ``item`` as rich would: a ``Table`` or a ``Cell`` here, anything else by rich."""
        from weightio.report.table import Table

        lines: list[str] | None = None
        if isinstance(item, Table):
            lines = _table_lines(item, self.width)
        elif isinstance(item, Cell) and cell_width(item.plain) <= self.width:
            lines = [item.plain]  # printable(): one line, no control characters
        if lines is None:
            sys.stdout.flush()
            self.rich_console().print(item)
            return
        sys.stdout.write("\n".join(lines) + "\n")


class _NotPlain(Exception):
    """A cell rich would read as markup: the table goes to rich."""


def _measure(value: Any) -> tuple[str, int]:
    if isinstance(value, Cell):
        return value.plain, cell_width(value.plain)
    if isinstance(value, str) and "[" not in value and ":" not in value:
        return value, cell_width(value)
    raise _NotPlain


def _table_lines(table: Table, width: int) -> list[str] | None:
    try:
        return table.plain_lines(_measure, width)
    except _NotPlain:
        return None
