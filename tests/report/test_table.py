"""The plain-text table is rich's default table, character for character, only faster."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from weightio.report.table import Table


def _render(table: Table, width: int, *, rich: bool, color: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=color, color_system="standard" if color else None)
    console.print(table._rich() if rich else table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _table() -> Table:
    table = Table(title="a.safetensors  vs  b.safetensors  (aligned by key)")
    for column in ("tensor", "status", "shape", "max |Δ|", "cosine"):
        table.add_column(column, justify="left" if column in {"tensor", "status", "shape"} else "right")
    table.add_row("embed.weight", "[green]identical[/]", "18078×928", "0", "1.000000")
    table.add_row("blocks.0.attn.q.weight[0]", "[yellow]changed[/]", "928×928", "0.004832", "0.999999")
    table.add_row("wide.名前", "[red]shape_changed[/]", "3×4 → 4×3", "-", "-")
    table.add_row("odd:colons:here :smile:", "changed", "scalar", "1e-07", "0.5")
    return table


@pytest.mark.parametrize("width", [200, 80])
def test_plain_table_equals_richs(width: int) -> None:
    table = _table()
    assert _render(table, width, rich=False) == _render(table, width, rich=True)


def test_too_narrow_or_colour_is_richs_own_table() -> None:
    table = _table()
    assert _render(table, 40, rich=False) == _render(table, 40, rich=True)  # wraps: rich's table
    assert _render(table, 200, rich=False, color=True) == _render(table, 200, rich=True, color=True)


def test_a_large_table_equals_richs() -> None:
    table = Table(title="big")
    for column in ("layer", "kind", "parameters", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for i in range(500):
        table.add_row(f"blocks.{i}.mlp.fc1", "opaque", f"weight[{4 * i}, 928]", f"{i * 928:,}")
    assert _render(table, 200, rich=False) == _render(table, 200, rich=True)
