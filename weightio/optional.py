"""Optional dependencies, imported on first use: a missing one is one line naming the extra."""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
from types import ModuleType

from weightio.errors import MissingFrameworkError

_EXTRAS = {
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "keras",
    "sklearn": "sklearn",
    "skops": "sklearn",
    "matplotlib": "plot",
    "dask": "dask",
    "distributed": "dask",
    "fsspec": "s3",
    "s3fs": "s3",
    "gcsfs": "s3",
}


#: Packages whose first import writes start-up lines from native code straight to file
#: descriptor 2 (TensorFlow's absl pre-init warning, oneDNN and cpu_feature_guard notices), which
#: ``TF_CPP_MIN_LOG_LEVEL`` does not silence.
_NOISY_IMPORTS = frozenset({"keras", "tensorflow"})

#: Those lines: absl's "before InitializeLog" warning and absl-formatted log records.
_START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWEF]\d{4} \d\d:\d\d:\d\d[.\d]*\s+\d+ [\w./-]+:\d+\] )"
)


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise one clear line naming the extra to install.

    TensorFlow's start-up lines never reach weightio's output: the first import of Keras runs with
    stderr captured, and only lines that are not its start-up log are passed on.
    """
    try:
        if module.split(".")[0] in _NOISY_IMPORTS and not _NOISY_IMPORTS & set(sys.modules):
            return _import_quietly(module)
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module.split(".")[0], "all")
        raise MissingFrameworkError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed ({exc}); "
            f"install it with: pip install 'weightio[{extra}]'"
        ) from None


def _import_quietly(module: str) -> ModuleType:
    """Import with file descriptor 2 sent to a temporary file, then replay what is not noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # a user's own setting wins
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            return importlib.import_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _START_UP_NOISE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
