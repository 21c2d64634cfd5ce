"""No option value makes any verb print a traceback: bad values are one line and exit 2.

Every value slot of every verb (positional paths and options) gets each of: a negative number, a
zero, a non-number, a missing file, a folder and ``/dev/null``. The verb may accept the value
(exit 0, or 1 for a ``diff`` that found differences or a transform refused by ``--max-change``); otherwise it must exit 2 with exactly one
line on stderr, ``error: …``. An exception escaping ``main`` fails the test with its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.cli import main

torch = pytest.importorskip("torch")

BAD_VALUES = {
    "negative": "-1",
    "zero": "0",
    "non-numeric": "abc",
    "missing": "{tmp}/absent.npy",
    "folder": "{tmp}",
    "devnull": "/dev/null",
}

#: verb -> (arguments that work, the value slots: ("pos", index) or an option name)
VERBS: dict[str, tuple[list[str], list[object]]] = {
    "convert": (["{a}", "{out}/c.safetensors"],
                [("pos", 0), ("pos", 1), "--to", "--seed", "--samples", "--atol", "--rtol",
                 "--key", "--head", "--architecture", "--max-shard-size", "--digest"]),
    "inspect": (["{a}"], [("pos", 0), "--html", "--key", "--architecture"]),
    "diff": (["{a}", "{a}"], [("pos", 0), ("pos", 1), "--atol", "--rtol", "--plot", "--html",
                              "--key"]),
    "explain": (["{a}", "--input", "1,2,3,4,5"], [("pos", 0), "--input", "--sample"]),
    "plot": (["{a}", "--out", "{out}/plots"], [("pos", 0), "--out"]),
    "run": (["{a}", "--input", "{x}"], [("pos", 0), "--input", "--output"]),
    "verify": (["{a}"], [("pos", 0)]),
    "cast": (["{a}", "{out}/h.safetensors", "--dtype", "float16"],
             [("pos", 0), ("pos", 1), "--dtype", "--layer", "--digest"]),
    "clean": (["{out}"], [("pos", 0), "--older-than"]),
    "fold": (["{a}", "{out}/f.safetensors"],
             [("pos", 0), ("pos", 1), "--seed", "--samples", "--max-change", "--key", "--digest"]),
    "prune": (["{a}", "{out}/p.safetensors", "--sparsity", "0.5"],
              [("pos", 0), ("pos", 1), "--sparsity", "--scope", "--norm", "--include", "--exclude",
               "--max-change"]),
    "quantize": (["{a}", "{out}/q.safetensors"],
                 [("pos", 0), ("pos", 1), "--dtype", "--include", "--exclude", "--seed", "--max-change"]),
    "importance": (["{a}"], [("pos", 0), "--top", "--plot"]),
    "schema": (["--out", "{out}/schema.json"], ["--out"]),
}


def _cases() -> list[tuple[str, object, str]]:
    return [(verb, slot, value) for verb, (_, slots) in VERBS.items() for slot in slots
            for value in BAD_VALUES]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("options")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    weightio.convert(module, folder / "a.safetensors")
    np.save(folder / "x.npy", np.ones((2, 5), dtype=np.float32))
    return {"a": str(folder / "a.safetensors"), "x": str(folder / "x.npy")}


def _argv(verb: str, slot: object, value: str, files: dict[str, str], tmp: Path) -> list[str]:
    good, _ = VERBS[verb]
    fill = {"a": files["a"], "x": files["x"], "out": str(tmp), "tmp": str(tmp)}
    args = [a.format(**fill) for a in good]
    value = value.format(**fill)
    if isinstance(slot, tuple):
        positions = [i for i, a in enumerate(args) if not a.startswith("--")
                     and (i == 0 or not args[i - 1].startswith("--"))]
        args[positions[slot[1]]] = value
    elif slot in args:
        args[args.index(slot) + 1] = value
    else:
        args += [slot, value]
    return [verb, *args]


@pytest.mark.parametrize(("verb", "slot", "kind"), _cases(),
                         ids=lambda v: v if isinstance(v, str) else f"arg{v[1]}")
def test_no_option_value_gives_a_traceback(verb, slot, kind, files, tmp_path, monkeypatch, capsys):
    if verb == "plot" or slot in ("--plot", "--html"):
        pytest.importorskip("matplotlib")
    argv = _argv(verb, slot, BAD_VALUES[kind], files, tmp_path)
    monkeypatch.chdir(tmp_path)  # a value taken as a relative output path ("-1") lands here
    monkeypatch.setattr(sys, "argv", ["weightio", *argv])
    with pytest.raises(SystemExit) as done:
        main()
    code = done.value.code
    err = capsys.readouterr().err
    accepted = (0, 1) if verb == "diff" else (0,)
    if code in accepted:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 1 and slot == "--max-change":  # a transform refused: a failed check, one line too
        assert len(lines) == 1 and "nothing was written" in lines[0], (argv, err)
        return
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
