"""scikit-learn model files: ``.skops`` (audited) and pickles (only when the user trusts them).

A pickle (``.pkl``, ``.pickle``, ``.joblib``) runs code while it loads, by design; weightio
opens one only with an explicit ``trust_pickle=True`` (CLI ``--trust-pickle``). A ``.skops``
file is data: skops lists the types it would construct that are not on its own safe list
(``get_untrusted_types``) *before* constructing anything; weightio accepts only the few data-only
scikit-learn helpers below, plus any type the caller names in ``trusted=``, and refuses the rest
by name. Writing goes through ``weightio.format.atomic``: a failed write leaves no partial file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from weightio.errors import MalformedFileError, UnsafeFormatError, UnsupportedSourceError
from weightio.format.atomic import atomic_write
from weightio.optional import require

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SKOPS_SUFFIX = ".skops"

#: Types skops does not trust by default that weightio accepts: plain-data optimizer state
#: of fitted MLPs (no code runs when they are built; their fields are numbers and arrays).
SKOPS_ALLOWLIST = frozenset(
    {
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)


def load_skops(path: Path, *, trusted: list[str] | None = None) -> Any:
    """Audit ``path`` with skops, then load it trusting only the allowlist and ``trusted``.

    Raises:
        UnsafeFormatError: the file would construct types nobody vouched for (named).
        MalformedFileError: not a skops file.
    """
    sio = require("skops.io", purpose="reading .skops files")
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as exc:  # skops raises zipfile/JSON/key errors for a damaged file
        raise MalformedFileError(f"not a readable .skops file ({type(exc).__name__}: {exc})", file=path) from None
    accepted = SKOPS_ALLOWLIST | set(trusted or [])
    refused = sorted(t for t in untrusted if t not in accepted)
    if refused:
        raise UnsafeFormatError(
            f"the file would construct types skops does not trust: {', '.join(refused)} "
            "(nothing was constructed or imported). Building them may run code, so weightio "
            "accepts only plain-data types; if you know where the file comes from and trust "
            f"these types, pass trusted={refused!r} to weightio.read",
            file=path,
        )
    try:
        return sio.load(path, trusted=[t for t in untrusted if t in accepted])
    except Exception as exc:
        raise MalformedFileError(f"skops could not load it ({type(exc).__name__}: {exc})", file=path) from None


def load_pickle(path: Path, *, trust_pickle: bool) -> Any:
    """Unpickle ``path`` with joblib, only when the caller said they trust it.

    Raises:
        UnsafeFormatError: ``trust_pickle`` was not given.
    """
    if not trust_pickle:
        raise UnsafeFormatError(
            "pickle files run code when loaded, so weightio does not open them unless you trust "
            "the file: pass trust_pickle=True (CLI: --trust-pickle), or save the model as .skops "
            "(skops.io.dump), which is read without running code",
            file=path,
        )
    joblib = require("joblib", purpose="reading pickled scikit-learn models")
    try:
        return joblib.load(path)
    except Exception as exc:
        raise MalformedFileError(f"could not unpickle it ({type(exc).__name__}: {exc})", file=path) from None


def save_estimator(estimator: Any, path: os.PathLike[str] | str) -> Path:
    """Write ``estimator`` to ``.skops`` or ``.joblib`` atomically; return the path.

    Raises:
        UnsupportedSourceError: another extension.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        sio = require("skops.io", purpose="writing .skops files")
        with atomic_write(path) as handle:
            sio.dump(estimator, handle)
    elif suffix == ".joblib":
        joblib = require("joblib", purpose="writing .joblib files")
        with atomic_write(path) as handle:
            joblib.dump(estimator, handle)
    else:
        raise UnsupportedSourceError(
            f"cannot write a scikit-learn model as {suffix or 'no extension'!r}; use .skops "
            "(safe to load) or .joblib",
            file=path,
        )
    return path
