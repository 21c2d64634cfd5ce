"""Piped output without rich is rich's piped output, character for character."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

import weightio
from weightio.analysis.inspect import inspect_archive
from weightio.report.plain import Cell, PlainConsole
from weightio.report.table import Table
from weightio.report.text import cell, print_diff, print_inspection

torch = pytest.importorskip("torch")


def _rich(draw: Callable[[object], None]) -> str:
    """What the CLI's piped rich console (``report.text.console`` before) writes."""
    out = io.StringIO()
    draw(Console(file=out, width=200, markup=False, emoji=False, highlight=False))
    return out.getvalue()


def _plain(draw: Callable[[object], None], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    draw(PlainConsole())
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[weightio.Archive, weightio.Archive]:
    """A small real CNN and the same network with other weights, both as archive files."""
    torch.manual_seed(0)

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10)).eval()

    folder = tmp_path_factory.mktemp("plain")
    paths = []
    for name in ("a", "b"):
        path = folder / f"{name}.safetensors"
        weightio.save(weightio.read(model(), example_input=torch.zeros(1, 3, 8, 8)), path)
        paths.append(path)
    return weightio.load(paths[0]), weightio.load(paths[1])


@pytest.mark.parametrize("stats", [False, True])
def test_inspection_table_equals_richs(archives, stats: bool, capsys) -> None:
    report = inspect_archive(archives[0], stats=stats)
    def draw(console):
        return print_inspection(report, console)
    assert _plain(draw, capsys) == _rich(draw)


def test_diff_table_equals_richs(archives, capsys) -> None:
    report = weightio.diff(archives[0].path, archives[1].path)
    def draw(console):
        return print_diff(report, console)
    text = _plain(draw, capsys)
    assert text == _rich(draw)
    assert "‖Δ‖/‖A‖" in text and "changed" in text


@pytest.mark.parametrize("rows", [
    [("wide.名前", "x"), ("ascii", "y")],            # wide characters: rich's cell widths
    [("[bold red]name[/]", ":smile:"), ("a", "b")],  # markup and emoji codes, shown literally
    [("w" * 150, "v" * 60)],                         # too wide: rich wraps it
    [],                                              # a table of no rows
])
def test_odd_tables_equal_richs(rows, capsys) -> None:
    table = Table(title=cell("títle [x] :y:"))
    table.add_column("name")
    table.add_column("‖Δ‖", justify="right")
    for row in rows:
        table.add_row(*map(cell, row))
    def draw(console):
        return console.print(table)
    assert _plain(draw, capsys) == _rich(draw)


@pytest.mark.parametrize("line", ["short", "", "名前 " * 30, "word " * 60, "x" * 250])
def test_lines_equal_richs(line: str, capsys) -> None:
    def draw(console):
        return console.print(cell(line))
    assert _plain(draw, capsys) == _rich(draw)


def test_markup_strings_and_other_objects_go_to_rich(capsys) -> None:
    table = Table(title="t")
    table.add_column("status")
    table.add_row("[green]identical[/]")  # a markup string: rich renders its markup
    for item in (table, "[b]plain[/b] :smile:", Cell("styled", "red")):
        def draw(console, item=item):
            return console.print(item)
        assert _plain(draw, capsys) == _rich(draw)


def test_piped_inspect_imports_no_rich(archives) -> None:
    """The CLI's piped ``inspect`` writes its table without importing rich at all."""
    code = (
        "import sys, json\n"
        f"sys.argv = ['weightio', 'inspect', {str(archives[0].path)!r}]\n"
        "from weightio.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120, cwd=Path(__file__).parent)
    modules = set(json.loads(run.stderr.strip().splitlines()[-1]))
    assert not any(m.split(".")[0] == "rich" for m in modules)
    assert "┏" in run.stdout and "parameters" in run.stdout
