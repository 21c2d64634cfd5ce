"""The bad-input battery (RELIABILITY.md): one test per hostile input, ids named after the item.

``tests/hostile/generate.py`` builds the inputs into a temp folder once per session; each test
hands its item to a forked child of a clean helper process (``tests/hostile/runner.py``), so a
crash in a C parser fails only that test and the audit hook stays out of the pytest process.
Every item asserts:

(a) a ``WeightioError`` subclass among those RELIABILITY.md names, with the file in the message
    (items with ``outcome: "ok"`` instead must read without error, and ``outcome: "cli"`` items
    must exit with the stated status, print no traceback, none of the raw bytes in ``absent``
    and every text in ``present``);
(b) the payload's canary file never appears;
(c) the audit hook saw no import of a module the file names, no process launch or socket, and
    no ``open`` outside the item's folder other than Python's own modules;
(d) the output folder is still empty, and the input folder holds what it held (nothing extracted,
    and a FIFO or device an item names is still one).

Each runs in a forked child with a time limit (``timeout``) and a memory limit (``memory``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from hostile.generate import item_ids  # noqa: E402

IDS = item_ids()


@pytest.fixture(scope="session")
def battery(tmp_path_factory: pytest.TempPathFactory, helper: Helper) -> dict[str, dict[str, Any]]:
    """Generate the battery once per run (shared by xdist workers through a lock), while the
    helper process is importing its readers."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    # xdist workers get basetemp/popen-gwN: their parent is this run's; without xdist the
    # parent is shared by every run (a stale battery from an older checkout would be reused)
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "battery"
    with open(shared / "battery.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.json").exists():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            subprocess.run([sys.executable, str(HERE / "hostile" / "generate.py"), str(folder)],
                           check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    manifest = json.loads((folder / "manifest.json").read_text())
    return {entry["id"]: entry for entry in manifest}


class Helper:
    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "hostile" / "runner.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)

    def run(self, item: dict[str, Any]) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(item) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the battery helper process died"
        return json.loads(line)["exit"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def helper() -> Any:
    h = Helper()
    yield h
    h.close()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _allowed_open(path: str, item_folder: Path) -> bool:
    """The item's own folder, and the Python installation itself (modules, package metadata that
    importing a framework reads, /proc/self): never a user's file elsewhere."""
    real = os.path.realpath(path)
    if real.startswith(str(item_folder.resolve()) + os.sep) or os.path.abspath(path).startswith(
        str(item_folder) + os.sep
    ):
        return True
    roots = {sys.prefix, sys.base_prefix, str(ROOT / "weightio"), *sysconfig.get_paths().values(),
             *(p for p in sys.path if p and os.path.isabs(p) and p not in (str(HERE), str(ROOT)))}
    roots = {os.path.realpath(r) for r in roots if r} | {"/proc/self", str(HERE / "hostile")}
    return any(real.startswith(r + os.sep) or real == r for r in roots)


@pytest.mark.parametrize("name", IDS, ids=IDS)
def test_battery(name: str, battery: dict[str, dict[str, Any]], helper: Helper, tmp_path: Path) -> None:
    item = battery[name]
    if "skip" in item:
        pytest.skip(item["skip"])
    folder = Path(item["folder"])
    out = tmp_path / "out"
    out.mkdir()
    before = _listing(folder)
    result_file = tmp_path / "result.json"
    code = helper.run({**item, "out": str(out), "result_file": str(result_file)})
    assert code == 0, f"the reader crashed or hung (exit status {code})"
    result = json.loads(result_file.read_text())
    error = result["error"]
    events = result["events"]

    outcome = item.get("outcome", "error")
    if outcome == "error":  # (a) a typed error naming the file
        assert error is not None, "the hostile input was accepted"
        assert error["weightio"], f"untyped {error['type']}: {error['message']}\n{error['traceback']}"
        assert error["type"] in item["expect"], f"{error['type']} (expected {item['expect']}): {error['message']}"
        assert Path(item["path"]).name in error["message"], error["message"]
        if item.get("match"):
            assert item["match"] in error["message"], error["message"]
    else:
        assert error is None, f"{error['type']}: {error['message']}\n{error['traceback']}"
    if outcome == "cli":
        cli = result["cli"]
        shown = cli["stdout"] + cli["stderr"]
        assert cli["exit"] == item["exit"], shown
        assert "Traceback" not in shown, shown
        for raw in item["absent"]:
            assert raw not in shown, (raw, shown)
        for text in item["present"]:
            assert text in shown, (text, shown)
    # (b) the canary never fires
    assert not Path(item["canary"]).exists()
    # (c) no module named in the file imported, no process/socket, nothing opened outside
    named = set(item["modules"])
    assert not [m for m in events["import"] if m.split(".")[0] in named], events["import"]
    assert not events["forbidden"], events["forbidden"]
    outside = [p for p in events["open"] if not _allowed_open(p, folder)]
    assert not outside, outside
    # (d) nothing written
    assert _listing(out) == []
    assert _listing(folder) == before
    if item.get("still"):
        mode = os.lstat(item["path"]).st_mode
        assert {"fifo": stat.S_ISFIFO, "device": stat.S_ISCHR}[item["still"]](mode), oct(mode)


def test_battery_count(battery: dict[str, dict[str, Any]]) -> None:
    """The battery's size, printed for the record (``pytest -rA`` / ``-s``)."""
    runnable = [k for k, v in battery.items() if "skip" not in v]
    print(f"bad-input battery: {len(battery)} items, {len(runnable)} runnable")
    assert len(battery) == len(IDS)


def test_battery_catches_an_unsafe_reader(battery: dict[str, dict[str, Any]], helper: Helper,
                                          tmp_path: Path) -> None:
    """Control: plain ``pickle.load`` on item 36 fires the canary and the audit hook sees it, so a
    passing battery item means the reader really was safe, not that the checks are blind."""
    item = battery["item36_pkl_reduce_payload"]
    out = tmp_path / "out"
    out.mkdir()
    result_file = tmp_path / "result.json"
    code = helper.run({**item, "op": "control_unsafe_pickle", "out": str(out),
                       "result_file": str(result_file)})
    assert code == 0
    events = json.loads(result_file.read_text())["events"]
    canary = Path(item["canary"])
    try:
        assert canary.exists()
        assert "os.system" in events["forbidden"]
        assert "webbrowser" in events["import"]
    finally:
        canary.unlink(missing_ok=True)
