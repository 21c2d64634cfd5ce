"""Running a Keras model file as a witness, in a process of its own started early.

A small conversion's time is imports: TensorFlow (``import keras``) to run the source, torch and
torch.export to build and write the target. In one process they add up; ``convert`` instead
calls ``start()`` as it begins, so (unless Keras is imported here already) a second Python
process imports Keras and loads the file (through the same checks as in-process:
``model.read_keras_file``) while this one builds the target. When the proof needs the
source's outputs, the probe goes to that process (an ``.npz`` on its stdin) and the outputs
come back (an ``.npz`` on its stdout). With a core free, the wait is then about the slower of
the two imports, not their sum (the CPU work is the same), and this process never imports
TensorFlow.

Anything the witness process raises as a weightio error comes back as the same error class
and message; if the process cannot be started or dies otherwise, the model is loaded and run in
this process instead, exactly as without ``start()``. Without ``start()`` (``weightio.read``
followed by a call) the runner loads in-process on first use.

    python -m weightio.frameworks.keras.witness MODEL [--weights FILE.weights.h5]

reads the probe from stdin and writes ``b"O"`` + the outputs' ``.npz``, or ``b"E"`` + the error
as JSON, to stdout.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import weightio.errors as error_classes
from weightio.errors import MalformedFileError, MissingFrameworkError, WeightioError
from weightio.optional import require

#: Modules whose presence means Keras (and TensorFlow) are imported in this process already.
_KERAS_MODULES = {"keras", "tensorflow", "tf_keras"}

#: The folder holding the ``weightio`` package, put first on the witness process's path.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def load_model_file(model_file: Path, weights: Path | None = None) -> Any:
    """The Keras model of ``model_file`` (checked, then loaded with ``safe_mode=True``), with
    the ``.weights.h5`` file ``weights`` loaded into it when given.
    """
    from weightio.frameworks.keras.model import read_keras_file

    model = read_keras_file(model_file)[1]
    if weights is not None:
        try:
            model.load_weights(weights)
        except (ValueError, KeyError, OSError) as exc:
            raise MalformedFileError(
                f"Keras could not load these weights into the model of {model_file} ({exc})",
                file=weights,
            ) from None
    return model


#: Packages ``import keras`` imports only for features a model file's load and call never use
#: (``keras.visualization``'s plots import matplotlib.pyplot, ``keras.wrappers`` scikit-learn),
#: each in a ``try: import ... except ImportError`` of its own. A fifth of ``import keras``.
UNUSED_BY_KERAS_MODELS = ("matplotlib", "sklearn")


def import_keras_lean() -> None:
    """``import keras`` with the packages of ``UNUSED_BY_KERAS_MODELS`` absent while it runs.

    Keras records them as not installed (its plotting and scikit-learn wrappers would say so);
    they are importable again afterwards, so anything that does need one still gets it.
    Nothing happens when Keras is imported already; a Keras that is not installed is left to
    the typed error of the load that follows.
    """
    if "keras" in sys.modules:
        return
    hidden = [name for name in UNUSED_BY_KERAS_MODELS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" raises ImportError
    try:
        require("keras", purpose="running a Keras model file")  # TensorFlow's start-up log dropped
    except MissingFrameworkError:
        pass
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _pack(arrays: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def _unpack(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as found:
        return [found[f"arr_{i}"] for i in range(len(found.files))]


class KerasFileRunner:
    """Runs a Keras model file: in a witness process once ``start()``ed, else in this one."""

    def __init__(
        self, model_file: Path, weights: Path | None = None, config: dict[str, Any] | None = None
    ) -> None:
        self.model_file = Path(model_file)
        self.weights = None if weights is None else Path(weights)
        #: The model file's config as the TF-free reader checked it (read again if not given).
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._model: list[Any] = []

    def start(self) -> None:
        """Start the witness process (it imports Keras and loads the file meanwhile), unless
        this process has imported Keras already (running here costs nothing to import, and a
        second process would import TensorFlow a second time) or only one core is ours.
        """
        if not _KERAS_MODULES & set(sys.modules) and _cores() >= 2:  # one core: nothing overlaps
            self.spawn()

    def spawn(self) -> None:
        """Start the witness process, whatever this one has imported.

        The config is held to the allowlist of Keras' own classes here first (step 1 of
        ``read_keras_file``): a file naming anything else starts no process, and is refused
        when the proof calls the runner, in this process and before Keras is imported, as
        without a witness (so the refusal also comes where it always came, after the target's
        own refusals).
        """
        if self._process is not None or self._model:
            return
        from weightio.frameworks.keras.files.config_checks import check_keras_objects
        from weightio.frameworks.keras.files.reader import read_model_file_checked

        try:
            config = self.config if self.config is not None else read_model_file_checked(self.model_file)[1]
            check_keras_objects(config, file=self.model_file)
        except WeightioError:
            return
        early = take_early()
        if early is not None:  # importing Keras since the CLI began: give it the file now
            try:
                assert early.stdin is not None
                early.stdin.write(json.dumps(self._argv()).encode() + b"\n")
                early.stdin.flush()
            except OSError:
                early.kill()
            else:
                self._process = early
                atexit.register(self.close)
                return
        command = [sys.executable, "-m", "weightio.frameworks.keras.witness", *self._argv()]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, env=witness_env())
        except OSError:
            self._process = None  # run in this process instead
            return
        atexit.register(self.close)

    def _argv(self) -> list[str]:
        argv = [str(self.model_file)]
        return argv if self.weights is None else [*argv, "--weights", str(self.weights)]

    def close(self) -> None:
        """Stop the witness process if it is still running (a conversion that failed early)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()

    def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for ``xs`` (Keras layout), from the witness process if started."""
        from weightio.frameworks.keras.model import run_keras

        process, self._process = self._process, None
        if process is not None:
            out, err = process.communicate(_pack([np.asarray(x) for x in xs]))
            if out[:1] == b"O":
                _replay(err)
                return _unpack(out[1:])
            if out[:1] == b"E":
                raise _error(json.loads(out[1:]))
            # the process died some other way: fall through and run in this process
        if not self._model:
            self._model.append(load_model_file(self.model_file, self.weights))
        return run_keras(self._model[0], xs)


#: A witness process started before anything was read (``start_early``), not yet given a file.
_EARLY: list[subprocess.Popen[bytes]] = []


def witness_env() -> dict[str, str]:
    """The environment of a witness process: this one's, with this ``weightio`` first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def start_early(process: subprocess.Popen[bytes]) -> None:
    """Hold ``process`` (``python -m weightio.frameworks.keras.witness`` with no file, started
    by the CLI as its first step) for the next ``spawn()``: it imports Keras meanwhile and
    reads nothing of the user's until ``spawn()`` has checked the file and sends its name.
    Killed at exit if no runner took it.
    """
    _EARLY.append(process)
    atexit.register(_kill_early)


def take_early() -> subprocess.Popen[bytes] | None:
    """The early process, if one is held and still running (then no longer held)."""
    while _EARLY:
        process = _EARLY.pop()
        if process.poll() is None:
            return process
    return None


def _kill_early() -> None:
    while _EARLY:
        process = _EARLY.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _replay(err: bytes) -> None:
    """What the witness wrote to stderr besides TensorFlow's start-up log (already dropped)."""
    text = err.decode("utf-8", "replace").strip()
    if text:
        sys.stderr.write(text + "\n")


def _error(data: dict[str, Any]) -> WeightioError:
    cls = getattr(error_classes, str(data.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, WeightioError)):
        cls = WeightioError
    return cls(str(data.get("message")), file=data.get("file"), layer=data.get("layer"),
               tensor=data.get("tensor"))


def main(argv: list[str]) -> int:
    """The witness process: load the model, read the probe, write the outputs.

    Without arguments (started early), Keras is imported first and the arguments come as a
    JSON list on the first line of stdin; an empty stdin means the file was not needed.
    """
    out = sys.stdout.buffer
    if not argv:
        import_keras_lean()
        line = sys.stdin.buffer.readline()
        if not line.strip():
            return 0
        argv = [str(item) for item in json.loads(line)]
    weights = Path(argv[argv.index("--weights") + 1]) if "--weights" in argv else None
    try:
        from weightio.frameworks.keras.model import run_keras

        import_keras_lean()
        model = load_model_file(Path(argv[0]), weights)
        outputs = run_keras(model, _unpack(sys.stdin.buffer.read()))
    except WeightioError as exc:
        out.write(b"E" + json.dumps({"class": type(exc).__name__, "message": exc.message,
                                      "file": exc.file, "layer": exc.layer,
                                      "tensor": exc.tensor}).encode())
        return 1
    out.write(b"O" + _pack(outputs))
    out.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The answer is out; what is left is the interpreter's teardown with TensorFlow loaded
    # (seconds on a busy machine), which the waiting ``convert`` would sit through: skip it.
    # Nothing of this process needs finalising (the private copy is removed already).
    os._exit(code)
