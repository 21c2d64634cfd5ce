"""F1 at exact kill points, and ``weightio clean`` on the leftovers real killed writers leave.

The kill points come from ``tests/hostile/kill_points.py`` (a forked child dies by SIGKILL at a
named step of the write, or is terminated by the kernel mid-tensor); the clean-up tests run on
exactly the temp files those kills left, plus decoys that must survive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weightio.errors import InvalidInputError, SourceNotFoundError
from weightio.format.cleanup import clean_stale_temps, find_stale_temps, is_temp_name
from weightio.format.store import load, save

HERE = Path(__file__).parent
TESTS = HERE.parent
ROOT = TESTS.parent
TEMP = re.compile(r"^\.model\.safetensors\.weightio-tmp-[0-9a-f]{12}$")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def kill_at(folder: Path, *points: str) -> dict:
    out = subprocess.run([sys.executable, str(TESTS / "hostile" / "kill_points.py"), str(folder),
                          *points], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def backdate(paths, seconds: float = 3600) -> None:
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when), follow_symlinks=False)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True,
                          text=True, env=ENV, timeout=60)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("f1points")
    return folder, kill_at(folder, "header-written", "mid-tensor", "before-rename", "renamed")


def test_f1_exact_kill_points_leave_the_old_file_or_the_new(killed) -> None:
    folder, report = killed
    by_point = {r["point"]: r for r in report["results"]}
    for point in ("header-written", "before-rename", "renamed"):
        assert by_point[point]["signal"] == signal.SIGKILL, by_point[point]
    assert by_point["mid-tensor"]["signal"] == signal.SIGXFSZ
    new_leftovers = []
    seen: set[str] = set()
    for point, expected in [("header-written", "old"), ("mid-tensor", "old"),
                            ("before-rename", "old"), ("renamed", "new")]:
        r = by_point[point]
        assert r["sha"] == report[expected], r  # never absent, empty or partial
        fresh = {n: s for n, s in r["leftovers"].items() if n not in seen}
        seen.update(r["leftovers"])
        assert all(TEMP.match(name) for name in r["leftovers"]), r
        new_leftovers.append((point, list(fresh.values())))
    sizes = dict(new_leftovers)
    full = (folder / "model.safetensors").stat().st_size
    assert sizes["header-written"] == [report["header_bytes"]]  # the header, no tensor bytes
    assert sizes["mid-tensor"] == [report["limit"]]  # cut inside the third tensor
    assert sizes["before-rename"] == [full]  # complete and fsynced, yet the target is the old one
    assert sizes["renamed"] == []  # the rename happened: nothing left over


def test_clean_removes_exactly_the_killed_writers_leftovers(killed, tmp_path: Path) -> None:
    source, _ = killed
    folder = tmp_path / "work"
    folder.mkdir()
    leftovers = []
    for p in source.iterdir():  # a copy: the module fixture stays intact for the other tests
        (folder / p.name).write_bytes(p.read_bytes())
        if TEMP.match(p.name):
            leftovers.append(folder / p.name)
    assert len(leftovers) == 3
    # Decoys that are not weightio temps, a symlink with a temp name, and a temp in a sub-folder.
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"keep me")
    decoys = [folder / ".model.safetensors.weightio-tmp-notes.txt",
              folder / "model.safetensors.weightio-tmp-0123456789ab",
              folder / ".model.safetensors.weightio-tmp-0123456789a"]
    for decoy in decoys:
        decoy.write_bytes(b"x")
    link = folder / ".link.safetensors.weightio-tmp-0123456789ab"
    link.symlink_to(outside)
    sub = folder / "sub"
    sub.mkdir()
    nested = sub / ".m.keras.weightio-tmp-abcdef012345.keras"
    nested.write_bytes(b"x")
    backdate([*leftovers, *decoys, link, nested, outside])

    assert sorted(find_stale_temps([folder])) == sorted(leftovers)
    dry = cli("clean", str(folder), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(line.split(" ", 2)[2] for line in dry.stdout.splitlines()[:-1]) == \
        sorted(str(p) for p in leftovers)
    assert all(p.exists() for p in leftovers)  # dry run removed nothing

    done = cli("clean", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "removed 3 stale temp file(s)"
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in decoys) and link.is_symlink() and outside.read_bytes() == b"keep me"
    assert nested.exists()  # not recursive by default
    load(folder / "model.safetensors", verify=True)

    assert clean_stale_temps([folder], recursive=True) == [nested]
    assert not nested.exists()
    assert cli("clean", str(folder)).stdout.strip() == "no stale weightio temp files found"


def test_clean_keeps_fresh_temps_of_a_live_write(killed, tmp_path: Path) -> None:
    source, _ = killed
    temps = [p for p in source.iterdir() if TEMP.match(p.name)]
    for p in temps:
        (tmp_path / p.name).write_bytes(b"x")  # just written: mtime now
    assert clean_stale_temps([tmp_path]) == []  # a minute's grace for writes in progress
    assert len(clean_stale_temps([tmp_path], older_than=0)) == len(temps)
    assert list(tmp_path.iterdir()) == []


def test_next_write_removes_leftovers_of_exact_kills(tmp_path: Path) -> None:
    report = kill_at(tmp_path, "header-written", "mid-tensor", "before-rename")
    leftovers = [p for p in tmp_path.iterdir() if TEMP.match(p.name)]
    assert len(leftovers) == 3 and all(r["sha"] == report["old"] for r in report["results"])
    backdate(leftovers)
    save(load(tmp_path / "model.safetensors"), tmp_path / "other.safetensors")
    save(load(tmp_path / "other.safetensors"), tmp_path / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "other.safetensors"]


def test_clean_bad_input_is_one_error_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from weightio.cli import app

    runner = CliRunner()
    file = tmp_path / "f"
    file.write_bytes(b"")
    for args in ([str(tmp_path / "missing")], [str(file)], [str(tmp_path), "--older-than", "-1"]):
        out = runner.invoke(app, ["clean", *args])
        assert out.exit_code == 2, out.output
        assert out.output.startswith("error: ") and len(out.output.splitlines()) == 1, out.output
    with pytest.raises(SourceNotFoundError):
        clean_stale_temps([tmp_path / "missing"])
    with pytest.raises(InvalidInputError):
        clean_stale_temps([file])


def test_temp_name_pattern_matches_what_the_writers_create() -> None:
    assert is_temp_name(".model.safetensors.weightio-tmp-0123456789ab")
    assert is_temp_name(".m.keras.weightio-tmp-0123456789ab.keras")
    assert is_temp_name(".m.keras.weightio-tmp-0123456789ab.h5")
    assert not is_temp_name("model.safetensors")
    assert not is_temp_name(".model.safetensors.weightio-tmp-XYZ")
    assert not is_temp_name("model.safetensors.weightio-tmp-0123456789ab")
