"""Run battery items in forked children of a clean helper process, under an audit hook.

The helper (``python tests/hostile/runner.py``) imports weightio's readers once, then for each
JSON request on stdin forks a child that installs ``sys.addaudithook``, runs the reader on the
item, and writes what happened (the exception, the audited imports/opens/process launches) to a
result file. The helper answers with the child's exit status, so a crash in a C parser (HDF5,
zip) or a hang (an alarm kills it after 60 s) fails that one test instead of killing the run, and
the audit hook never touches the pytest process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

_FORBIDDEN_EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
                     "os.fork", "socket.connect", "socket.bind", "socket.getaddrinfo",
                     "urllib.Request")


def _preload() -> None:
    import h5py  # noqa: F401

    import weightio
    import weightio.format.archive
    import weightio.format.sharding
    import weightio.frameworks.keras.files.reader
    import weightio.frameworks.sklearn.files
    import weightio.frameworks.torch.files.pickle
    import weightio.frameworks.torch.files.state_dict
    import weightio.verbs.read

    _ = weightio.errors
    try:  # the sklearn items: import scikit-learn once, not in every forked child
        import sklearn.linear_model  # noqa: F401
        import sklearn.pipeline  # noqa: F401
        import sklearn.preprocessing  # noqa: F401
        import skops.io  # noqa: F401
    except ImportError:
        pass
    try:  # converting to .pt needs torch; importing it once here keeps each forked child fast
        import torch

        torch.set_num_threads(1)
        import weightio.frameworks.torch.write  # noqa: F401
    except ImportError:
        pass


def _limit_memory(budget: int) -> None:
    """Cap the child's address space at what it inherited plus ``budget`` bytes."""
    import resource

    with open("/proc/self/statm") as handle:
        current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (current + budget, current + budget))


def _run_cli(args: list[str]) -> dict[str, Any]:
    """The ``weightio`` command in this process: its exit status and what it printed."""
    import contextlib
    import io

    from weightio.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code: Any = 0
    argv = sys.argv
    sys.argv = ["weightio", *args]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    return {"exit": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def _run_op(item: dict[str, Any], out: Path) -> dict[str, Any] | None:
    import numpy as np

    import weightio
    from weightio.format.store import load

    path = item["path"]
    op = item["op"]
    if op == "cli":
        return _run_cli(item["args"])
    if op == "read_values":  # read, and touch every byte of every tensor; nothing written
        archive = weightio.read(path, **item.get("options", {}))
        for array in archive.tensors.values():
            np.asarray(array).tobytes()
        return None
    if op == "save_over":  # write a valid archive over ``path``
        weightio.save(load(item["source"]), path)
        return None
    if op == "convert_archive":
        weightio.convert(path, out / "model.safetensors", **item.get("options", {}))
        return None
    if op == "load":
        archive = load(path)
    elif op == "load_verify":
        archive = load(path, verify=True)
    elif op == "verify":
        archive = load(path)
        archive.verify()
    elif op in ("read", "convert"):
        archive = weightio.read(path, **item.get("options", {}))
        if op == "convert":
            weightio.convert(path, out / "model.pt")
    elif op == "cast":
        archive = weightio.cast(path, item["dtype"]).archive
    elif op == "control_unsafe_pickle":  # the battery's own check: an unsafe reader must be caught
        import pickle

        with open(path, "rb") as handle:
            pickle.load(handle)  # noqa: S301 - deliberately unsafe, in a throwaway child
        return None
    else:  # pragma: no cover
        raise AssertionError(op)
    weightio.save(archive, out / "result.safetensors")
    return None


def _child(item: dict[str, Any], result_file: str) -> None:
    events: dict[str, list[Any]] = {"import": [], "open": [], "forbidden": []}
    recording = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not recording[0]:
            return
        if event == "import":
            events["import"].append(str(args[0]))
        elif event == "open":
            target = args[0]
            if isinstance(target, (str, bytes, os.PathLike)):
                events["open"].append(os.fsdecode(target))
        elif event.startswith(_FORBIDDEN_EVENTS):
            events["forbidden"].append(event)

    out = Path(item["out"])
    _limit_memory(int(item.get("memory") or 2 << 30))
    sys.addaudithook(hook)
    error: dict[str, Any] | None = None
    cli: dict[str, Any] | None = None
    try:
        cli = _run_op(item, out)
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the test
        from weightio.errors import WeightioError

        error = {
            "type": type(exc).__name__,
            "weightio": isinstance(exc, WeightioError),
            "message": str(exc)[:2000],
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
        }
    recording[0] = False
    with open(result_file, "w") as handle:
        json.dump({"error": error, "events": events, "cli": cli}, handle)


def serve() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _preload()
    for line in sys.stdin:
        item = json.loads(line)
        result_file = item["result_file"]
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.alarm(int(item.get("timeout") or 60))
                _child(item, result_file)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 3
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        answer = {"exit": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's (and torch's) slow teardown
