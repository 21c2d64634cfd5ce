"""Names from a file reach a terminal as text: no markup, no control codes, no traceback.

The checkpoints here name their tensors with rich markup (``[bold red]``, ``[/x]`` that made rich
raise), ANSI escapes (clear screen, colour), NUL, carriage return, tab/newline, a bidi override
(U+202E) and an emoji code. ``inspect``, ``inspect --stats`` and ``diff`` run under a real
pseudo-terminal (so nothing strips escapes on the way), and the screen must show every name
literally: the markup as typed, each control character as its escape (``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weightio.terminal import json_text, printable, printable_lines

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["[bold red]red[/]", "[/x]", "\x1b[2J\x1b[31mclear", "nul\x00byte", "bidi\u202etxt.exe",
         ":smile:", "cr\rover", "tab\tnl\nx", "bell\x07", "c1\x9bcsi", "zw\u200bsp", "del\x7f"]
#: What an attack would put on the screen raw.
RAW = ["\x1b[2J", "\x1b[31m", "\x00", "\u202e", "\rover", "\x07", "\x9b", "\u200b", "\x7f"]


def _key(i: int, name: str) -> str:
    return f"p{i}.{name}" if "/" in name else f"{name}.weight"


def _state_dict(path: Path, scale: float) -> Path:
    from weightio.format.safetensors import build_header, write_tensors

    tensors = {_key(i, n): np.full(2, scale, "f4") for i, n in enumerate(NAMES)}
    header, ordered = build_header(tensors.items(), {})
    with open(path, "wb") as handle:
        write_tensors(handle, header, ordered)
    return path


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return its status and screen."""
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "240", "TERM": "xterm-256color",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "weightio", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, screen.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("names")
    return _state_dict(folder / "a.safetensors", 1.0), _state_dict(folder / "b.safetensors", 2.0)


@pytest.mark.parametrize("verb", [["inspect"], ["inspect", "--stats"], ["diff"]])
def test_names_show_literally_on_a_terminal(verb: list[str], checkpoints: tuple[Path, Path]) -> None:
    a, b = checkpoints
    status, screen = _on_a_terminal(*verb, str(a), *([str(b)] if verb == ["diff"] else []))
    assert status == (1 if verb == ["diff"] else 0), screen
    assert "Traceback" not in screen and "Error" not in screen, screen
    for raw in RAW:
        assert raw not in screen, (raw, screen)
    for shown in ("[bold red]red[/]", "[/x]", ":smile:", "\\x1b[2J\\x1b[31mclear", "nul\\x00byte",
                  "bidi\\u202etxt.exe", "cr\\x0dover", "tab\\x09nl\\x0ax", "c1\\x9bcsi"):
        assert shown in screen, (shown, screen)


def test_json_output_keeps_the_names_and_shows_no_codes(checkpoints: tuple[Path, Path]) -> None:
    a, _ = checkpoints
    out = subprocess.run([sys.executable, "-m", "weightio", "inspect", "--json", str(a)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    for raw in RAW:
        assert raw not in out.stdout
    keys = {t["key"] for layer in json.loads(out.stdout)["layers"] for t in layer["tensors"]}
    assert keys == {_key(i, n) for i, n in enumerate(NAMES)}  # the same names, escaped in JSON


def test_an_error_naming_a_hostile_key_is_one_escaped_line(tmp_path: Path) -> None:
    from weightio.format.safetensors import build_header, write_tensors

    path = tmp_path / "bad.safetensors"
    header, ordered = build_header([(" \x1b[2Jlead\u202e\n.weight", np.ones(2, "f4"))], {})
    with open(path, "wb") as handle:
        write_tensors(handle, header, ordered)
    status, screen = _on_a_terminal("inspect", str(path))
    assert status == 2
    assert screen.strip().count("\n") == 0, screen  # one line (the pty ends it with \r\n)
    assert screen.startswith("error: ") and "\\x1b[2Jlead\\u202e\\x0a" in screen
    for raw in RAW:
        assert raw not in screen


def test_the_html_report_escapes_markup_and_shows_control_characters(checkpoints, tmp_path) -> None:
    a, b = checkpoints
    out = subprocess.run([sys.executable, "-m", "weightio", "diff", str(a), str(b), "--html",
                          str(tmp_path / "d.html")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1, out.stderr
    page = (tmp_path / "d.html").read_text(encoding="utf-8")
    assert "bidi\\u202etxt.exe" in page and "\u202e" not in page and "\x1b" not in page
    assert "[bold red]red[/]" in page


def test_printable() -> None:
    assert printable("fc.weight") == "fc.weight"
    assert printable("a\x1b[0mb\u202ec\x00\U000e0001") == "a\\x1b[0mb\\u202ec\\x00\\U000e0001"
    assert printable("żółw 🐢") == "żółw 🐢"
    assert printable_lines("a\x1b\nb") == "a\\x1b\nb"
    assert json.loads(json_text(json.dumps({"k": "\u202e\x1b"}, ensure_ascii=False))) == {"k": "\u202e\x1b"}


def test_plot_titles_show_names_literally(tmp_path: Path) -> None:
    """A name with ``$…$`` used to be parsed as mathtext by matplotlib (a traceback)."""
    pytest.importorskip("matplotlib")
    from weightio.format.safetensors import build_header, write_tensors

    path = tmp_path / "m.safetensors"
    header, ordered = build_header([("b$^{$.weight", np.ones((3, 4), "f4")),
                                    ("\x1b[2Jc.weight", np.ones(2, "f4"))], {})
    with open(path, "wb") as handle:
        write_tensors(handle, header, ordered)
    out = subprocess.run([sys.executable, "-m", "weightio", "plot", str(path), "--out",
                          str(tmp_path / "png")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "\x1b" not in out.stdout
    assert len(list((tmp_path / "png").glob("*.png"))) >= 2
