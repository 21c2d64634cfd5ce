"""Timestamps of ``weightio convert``'s phases in both processes: this one and the Keras witness.

    python benchmarks/convert_phases.py MODEL.keras OUT.pt2 [convert options]

Runs the CLI with its phases wrapped (reading the source, building the target, the proof, the
wait for the witness, writing) and the witness process replaced by this script in the witness
role, which marks its own phases (weightio imported, Keras imported, model loaded, probe in,
outputs out). Prints, sorted by time, ``[pid wall-seconds cpu cpu-seconds-of-that-process]``
lines: the critical path is whichever process the other waits for. A one-off measuring tool:
the product prints none of this. Figures: docs/performance.md, "Small jobs".
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

T0 = float(os.environ.get("WEIGHTIO_PHASES_T0") or time.time())
MARKS = os.environ.get("WEIGHTIO_PHASES_FILE") or tempfile.mkstemp(suffix=".txt")[1]


def mark(what: str) -> None:
    with open(MARKS, "a") as f:
        f.write(f"[{os.getpid()} {time.time() - T0:6.2f} cpu {time.process_time():5.2f}] {what}\n")


def witness() -> None:
    """The witness role: what ``weightio.frameworks.keras.witness.main`` does, marked."""
    mark("witness: interpreter up")
    from pathlib import Path

    import weightio.frameworks.keras.witness as w
    mark("witness: weightio imported")
    w.import_keras_lean()
    mark("witness: keras imported")
    argv = sys.argv[2:] or json.loads(sys.stdin.buffer.readline())
    mark("witness: file named")
    from weightio.frameworks.keras.model import run_keras

    model = w.load_model_file(Path(argv[0]))
    mark("witness: model loaded (checked)")
    data = sys.stdin.buffer.read()
    mark("witness: probe received")
    out = run_keras(model, w._unpack(data))
    mark("witness: ran")
    sys.stdout.buffer.write(b"O" + w._pack(out))
    sys.stdout.flush()
    mark("witness: answered")
    os._exit(0)


def wrap(owner: Any, name: str, label: str) -> None:
    inner = getattr(owner, name)

    def marked(*args: Any, **kwargs: Any) -> Any:
        mark(f"main: {label} begin")
        try:
            return inner(*args, **kwargs)
        finally:
            mark(f"main: {label} end")

    setattr(owner, name, marked)


def main() -> None:
    import subprocess

    popen = subprocess.Popen

    def witness_popen(cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if "weightio.frameworks.keras.witness" in cmd:
            cmd = [sys.executable, __file__, "witness", *cmd[3:]]
            kwargs["env"] = {**kwargs["env"], "WEIGHTIO_PHASES_T0": str(T0),
                             "WEIGHTIO_PHASES_FILE": MARKS}
            mark("main: witness process started")
        return popen(cmd, *args, **kwargs)

    subprocess.Popen = witness_popen  # type: ignore[misc]
    mark("main: interpreter up")
    import weightio.cli as cli
    mark("main: weightio.cli imported")
    sys.argv = ["weightio", *sys.argv[1:]]
    cli._start_witness_early(sys.argv[1:])
    cli._start_witness_early = lambda args: None
    import weightio.frameworks.keras.witness as w
    import weightio.frameworks.torch.table as torch_table
    import weightio.verbs.convert as convert
    import weightio.verbs.proof as proof
    mark("main: weightio.verbs.convert imported")
    wrap(convert, "open_source", "read the source")
    wrap(convert, "_build_target", "build the target")
    wrap(proof, "forward", "numpy runtime")
    wrap(convert, "verify_conversion", "proof")
    wrap(w.KerasFileRunner, "__call__", "wait for the witness")
    wrap(convert, "_write", "write")
    del torch_table
    try:
        cli.main()
    except SystemExit:
        pass
    finally:
        mark("main: done")
        with open(MARKS) as f:
            lines = f.readlines()
        sys.stderr.write("".join(sorted(lines, key=lambda line: float(line.split()[1]))))


if __name__ == "__main__":
    witness() if sys.argv[1:2] == ["witness"] else main()
