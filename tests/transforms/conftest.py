"""The transforms' tests share one way to run the CLI in-process (no new interpreter per call)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from weightio.cli import main


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli("prune", src, dst, ...)`` -> ``.returncode``, ``.stdout``, ``.stderr``, as a process."""

    def run(*argv: str) -> SimpleNamespace:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["weightio", *map(str, argv)])
        with pytest.raises(SystemExit) as done:
            main()
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=done.value.code, stdout=captured.out, stderr=captured.err)

    return run
