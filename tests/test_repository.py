"""The repository's top level holds only what the project is made of: a stray file (a test
writing ``-1`` into the working folder, once committed by accident) fails here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = {
    ".ci", ".gitignore", "DEVELOPERS.md", "README.md", "benchmarks", "docs", "examples", "fuzz",
    "pyproject.toml", "schema", "scripts", "tests", "weightio",
}


def test_top_level_is_what_the_project_is_made_of():
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    tracked = {path.split("/", 1)[0] for path in listed}
    assert tracked <= TOP_LEVEL, sorted(tracked - TOP_LEVEL)
