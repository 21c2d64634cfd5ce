"""The reader contract, checked for one input at a time in a separate worker process.

For every input, calling the reader either succeeds (and the result is usable: every tensor's
bytes can be read, the spec serializes) or raises a ``weightio.errors.WeightioError`` subclass.
Anything else is a bug: an untyped exception (``IndexError``, ``KeyError``, ``struct.error``,
``UnicodeDecodeError``, ``zipfile.BadZipFile``, h5py's ``OSError``/``RuntimeError``,
``RecursionError``, ``MemoryError``, pickle errors…), a hang (over ``timeout`` seconds), a crash
(the worker dies: a segfault in HDF5's C code, an abort), or a side effect: an audit event that
runs code (``os.system``, ``subprocess``, ``exec``-family, sockets), an import of a module that was
not loaded before the reader ran, or an ``open`` outside the input's folder and Python's own files.

The worker is a fresh interpreter (``python -m fuzz.contract``) that imports the readers once and
answers JSON requests on stdin; ``Worker`` in the driving process restarts it after a crash or a
hang, so a C-level crash is recorded against the one input that caused it, never fatal to the run.
The worker's address space is capped (``RLIMIT_AS``) so a reader that allocates what a header
claims shows up as ``MemoryError`` instead of swapping.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Seconds an input may take before it counts as a hang.
DEFAULT_TIMEOUT = 10.0
#: Address-space cap of a worker (bytes).
MEMORY_LIMIT = 3 << 30
_FORBIDDEN = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
              "socket.", "urllib.Request", "marshal.loads", "exec", "ctypes.dlopen",
              "pickle.find_class", "shutil.", "os.remove", "os.rename", "os.unlink")


# --- the worker side -----------------------------------------------------------------------------

def _touch(archive: Any) -> None:
    """Use the result as a caller would: read every tensor's bytes, serialize the spec."""
    from weightio.format.archive import sha256_of

    for key in archive.tensors:
        sha256_of(archive.tensors[key])
    archive.spec.model_dump_json()


def call_reader(reader: str, path: str, options: dict[str, Any]) -> None:
    """The calls the contract covers for ``reader``; raises whatever the reader raises."""
    import weightio

    if reader.startswith("_selftest_"):
        _selftest(reader[len("_selftest_"):], path)
        return
    if reader == "archive":
        archive = weightio.read(path, **options)  # a weightio archive, or a plain state dict
        _touch(archive)
        if archive.path is not None:  # it was a weightio archive: load it verified too
            archive = weightio.load(path, verify=True)
            _touch(archive)
        return
    _touch(weightio.read(path, **options))


def _selftest(kind: str, path: str) -> None:
    """Contract breaks on purpose, so tests can show the harness reports each kind."""
    if kind == "untyped":
        raise KeyError(path)
    if kind == "crash":
        os.abort()
    if kind == "hang":
        time.sleep(3600)
    if kind == "import":
        import xmlrpc.client  # noqa: F401 - a module no reader imports
    if kind == "system":
        os.system("true")  # noqa: S605


#: Adapter modules that import a framework at the top (skipped by the preload: readers of files
#: never need them), and the framework-free ones among them that the readers use.
_FRAMEWORK_MODULES = ("torch", "sklearn", "keras_write", "keras_graph_live")
_FREE_ADAPTERS = ("torch_pickle",)


def _preload() -> None:
    import h5py  # noqa: F401
    import pydantic  # noqa: F401

    import weightio
    import weightio.format.archive
    import weightio.format.sharding
    import weightio.format.weights_only
    import weightio.frameworks.keras.files.reader
    import weightio.frameworks.keras.read.model  # noqa: F401
    import weightio.frameworks.torch.files.pickle
    import weightio.verbs.read

    _ = weightio.errors
    import importlib
    import pkgutil

    # Every framework-free weightio module, so that a lazy import inside a reader is not taken
    # for an import the file asked for (the adapters import their frameworks inside functions).
    for info in pkgutil.walk_packages(weightio.__path__, "weightio."):
        short = info.name.rsplit(".", 1)[-1]
        if (info.name.endswith("__main__") or ".report" in info.name or short == "cli"
                or (short.startswith(_FRAMEWORK_MODULES) and short not in _FREE_ADAPTERS)):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass


def _importing() -> bool:
    """Whether the current audit event comes from the import machinery (a module being loaded,
    whose ``import`` event is judged on its own), not from reader code."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class _Audit:
    """Records what the reader does that it must not (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.folder = ""
        self.events: list[str] = []
        self.known = {name.split(".")[0] for name in sys.modules}
        roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(ROOT / "weightio"), "/proc/self",
                 "/dev/urandom", "/dev/null", *(p for p in sys.path if p and os.path.isabs(p))}
        self.roots = tuple(os.path.realpath(r) for r in roots if r)

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "import":
            top = str(args[0]).split(".")[0]
            if top not in self.known and top != "weightio":
                self.events.append(f"import {args[0]}")
        elif event == "open":
            target = args[0]
            if isinstance(target, (str, bytes, os.PathLike)):
                real = os.path.realpath(os.fsdecode(target))
                if not real.startswith(self.folder) and not real.startswith(self.roots):
                    self.events.append(f"open {real}")
        elif event.startswith(_FORBIDDEN) and not _importing():
            self.events.append(event)


def _run_one(request: dict[str, Any], audit: _Audit) -> dict[str, Any]:
    import traceback
    import warnings

    from weightio.errors import WeightioError

    path = request["path"]
    audit.folder = os.path.realpath(os.path.dirname(path)) + os.sep
    audit.events = []
    result: dict[str, Any] = {"status": "ok"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audit.active = True
        try:
            call_reader(request["reader"], path, request.get("options") or {})
        except BaseException as exc:  # noqa: BLE001 - every outcome is reported
            audit.active = False
            typed = isinstance(exc, WeightioError)
            result = {
                "status": "typed" if typed else "untyped",
                "error": type(exc).__name__,
                "message": str(exc)[:500],
                "names_file": bool(typed and (exc.file is not None
                                              or os.path.basename(path) in str(exc))),
            }
            if not typed:
                result["traceback"] = "".join(traceback.format_exception(exc))[-3000:]
        finally:
            audit.active = False
    result["events"] = audit.events
    result["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught})
    return result


def serve() -> None:
    """The worker loop: one JSON request per line in, one JSON result per line out."""
    import resource

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    limit = int(os.environ.get("WEIGHTIO_FUZZ_MEMORY", MEMORY_LIMIT))
    _preload()
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    audit = _Audit()
    sys.addaudithook(audit)
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a reader prints can corrupt the protocol
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        result = _run_one(json.loads(line), audit)
        out.write(json.dumps(result) + "\n")
        out.flush()


# --- the driving side ----------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one input did. ``kind``: ok, typed, untyped, crash, hang or violation."""

    kind: str
    error: str = ""
    message: str = ""
    detail: str = ""
    names_file: bool = True

    @property
    def is_bug(self) -> bool:
        """Whether the input broke the contract."""
        return self.kind in ("untyped", "crash", "hang", "violation")

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.error}" if self.error else self.kind


class Worker:
    """A reader worker process; restarted after a crash or a hang."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-m", "fuzz.contract"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                cwd=ROOT)
        if self._readline(proc, time.monotonic() + 120) != b"ready\n":
            proc.kill()
            proc.wait()
            self._close_pipes(proc)
            raise RuntimeError("the fuzz worker did not start (run python -m fuzz.contract)")
        return proc

    def check(self, reader: str, path: Path, options: dict[str, Any] | None = None) -> Outcome:
        """Run the contract on the file at ``path``."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        request = {"reader": reader, "path": str(path), "options": options or {}}
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            return self._died(proc)
        deadline = time.monotonic() + self.timeout
        line = self._readline(proc, deadline)
        if line is None:
            self._kill(proc)
            return Outcome("hang", detail=f"no answer within {self.timeout:.0f} s")
        if not line:
            return self._died(proc)
        result = json.loads(line)
        if result["events"]:
            return Outcome("violation", error=result["events"][0].split(" ")[0],
                           detail="; ".join(result["events"][:5]))
        if result["status"] == "ok":
            return Outcome("ok")
        return Outcome(result["status"], result["error"], result["message"],
                       result.get("traceback", ""), result.get("names_file", True))

    def _readline(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            buffer += chunk
            if buffer.endswith(b"\n"):
                return buffer

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def _died(self, proc: subprocess.Popen[bytes]) -> Outcome:
        code = proc.wait()
        self._close_pipes(proc)
        self.proc = None
        self.restarts += 1
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return Outcome("crash", error=name, detail=f"worker died ({name})")

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()
        self._close_pipes(proc)
        self.proc = None
        self.restarts += 1

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._close_pipes(self.proc)
            self.proc = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    serve()
    sys.stdout.flush()
    os._exit(0)
