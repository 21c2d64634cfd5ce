"""``inspect --stats`` fits an 80-column terminal: columns are dropped by width, and it says which."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

import weightio
from weightio.analysis.inspect import inspect_archive
from weightio.report.text import print_inspection

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("colour", [None, "truecolor"])
@pytest.mark.parametrize("width", [80, 100, 250])
def test_stats_table_fits_the_terminal(width, colour):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                 torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10)).eval()
    report = inspect_archive(weightio.read(module, example_input=torch.zeros(1, 3, 8, 8)), stats=True)
    out = io.StringIO()
    print_inspection(report, Console(file=out, width=width, color_system=colour,
                                     markup=False, emoji=False, highlight=False))
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()
    assert max(len(line) for line in lines) <= width
    table = "\n".join(lines)
    assert "mean" in table and "std" in table and "NaN/Inf" in table and "1.weight" in table
    if width == 80:
        assert any(line.startswith("not shown at this width:") for line in lines)
    if width == 250:
        assert "L2" in table and not any("not shown" in line for line in lines)
