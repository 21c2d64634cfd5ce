"""Battery items 37-39: ``.skops`` types outside the allowlist, Pipelines with code or unfitted
steps (``.skops`` and trusted ``.joblib``), and an overflowing dtype cast. Registered into
``registry.ITEMS`` when ``generate.py`` imports it. Built with scikit-learn, skops and joblib (left out, and
reported as skipped, when they are not installed); the ``.skops`` schema edit uses zipfile/json.
"""

from __future__ import annotations

import json
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from registry import dense_archive, item  # the battery's one registry

UNSAFE = ["UnsafeFormatError"]
CUSTOM_MODULE = "weightio_battery_skops"


def _sklearn() -> Any:
    try:
        import joblib  # noqa: F401
        import sklearn  # noqa: F401
        import skops.io  # noqa: F401
    except ImportError:
        return None
    return sklearn


def _data() -> tuple[np.ndarray, np.ndarray]:
    x = np.abs(np.random.default_rng(3).standard_normal((40, 3)))
    return x, (x[:, 0] > x[:, 1]).astype(int)


def _fitted_pipeline(first: Any) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([("prep", first), ("clf", LogisticRegression())]).fit(*_data())


def _skops(d: Path, obj: Any, op: str, expect: list[str], **extra: Any) -> dict[str, Any]:
    import skops.io as sio

    path = d / "model.skops"
    sio.dump(obj, path)
    return {"path": str(path), "op": op, "expect": expect, **extra}


def _needs_sklearn(fn: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        if _sklearn() is None:
            return {"skip": "scikit-learn, skops or joblib is not installed"}
        return fn(d)

    return build


# --- item 37: .skops with a type outside weightio's allowlist -----------------------------------

@item("item37_skops_custom_estimator_type")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    # A StandardScaler subclass from a module the reader does not have: skops names it; loading
    # it would import that module. It must be refused by name, before anything is constructed.
    mod = types.ModuleType(CUSTOM_MODULE)
    exec(compile("from sklearn.preprocessing import StandardScaler\n"
                 "class MyScaler(StandardScaler):\n    pass\n", CUSTOM_MODULE, "exec"), mod.__dict__)
    sys.modules[CUSTOM_MODULE] = mod
    try:
        scaler = mod.MyScaler().fit(_data()[0])
        return _skops(d, scaler, "read", UNSAFE, modules=[CUSTOM_MODULE],
                      match=f"{CUSTOM_MODULE}.MyScaler")
    finally:
        del sys.modules[CUSTOM_MODULE]


@item("item37_skops_builtins_eval")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.preprocessing import FunctionTransformer

    return _skops(d, FunctionTransformer(func=eval), "read", UNSAFE, match="builtins.eval")


@item("item37_skops_os_system")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    import os

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = Pipeline([("prep", FunctionTransformer(func=os.system)), ("clf", LogisticRegression())])
    return _skops(d, pipe, "read", UNSAFE, match=f"{os.system.__module__}.system")


@item("item37_skops_schema_edited_to_subprocess_popen")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    # A valid file whose schema.json is edited by hand to construct subprocess.Popen: the audit
    # reads the file's own schema, not what skops would have written.
    from sklearn.preprocessing import StandardScaler

    entry = _skops(d, StandardScaler().fit(_data()[0]), "read", UNSAFE,
                   modules=["subprocess"], match="subprocess.Popen")
    path = Path(entry["path"])
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(members["schema.json"])
    schema["__module__"], schema["__class__"] = "subprocess", "Popen"
    members["schema.json"] = json.dumps(schema).encode()
    path.unlink()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return entry


# --- item 38: code in a Pipeline, unfitted estimators --------------------------------------------

@item("item38_skops_function_transformer_log1p")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.preprocessing import FunctionTransformer

    # skops trusts numpy ufuncs, so this file loads; weightio must refuse the step by name.
    return _skops(d, _fitted_pipeline(FunctionTransformer(np.log1p)), "read",
                  ["UnsupportedLayerError"], match="step 'prep'")


@item("item38_skops_unfitted_estimator")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    return _skops(d, LogisticRegression(), "read", ["UnsupportedSourceError"], match="not fitted")


@item("item38_skops_pipeline_unfitted_step")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.preprocessing import StandardScaler

    pipe = _fitted_pipeline(StandardScaler())
    pipe.steps[0] = ("prep", StandardScaler())  # a fresh, unfitted scaler in front of a fitted head
    return _skops(d, pipe, "read", ["UnsupportedSourceError"],
                  match="step 'prep' (sklearn.preprocessing.StandardScaler) is not fitted")


def _joblib(d: Path, obj: Any, expect: list[str], match: str) -> dict[str, Any]:
    """A pickle the user trusts (``trust_pickle=True``); cloudpickle so a lambda survives."""
    try:
        import cloudpickle  # a joblib dependency; pickles a lambda by value
    except ImportError:
        return {"skip": "cloudpickle is not installed"}
    path = d / "model.joblib"
    path.write_bytes(cloudpickle.dumps(obj))
    return {"path": str(path), "op": "read", "options": {"trust_pickle": True}, "expect": expect,
            "match": match}


@item("item38_joblib_function_transformer_lambda")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.preprocessing import FunctionTransformer

    pipe = _fitted_pipeline(FunctionTransformer(lambda x: x))
    canary = str(d / "CANARY")
    # After fitting: a lambda that touches the canary when called. Reading must never call it.
    pipe.steps[0][1].func = lambda x, _c=canary: (open(_c, "w").close(), x)[1]
    return _joblib(d, pipe, ["UnsupportedLayerError"], "step 'prep'")


@item("item38_joblib_function_transformer_named")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.preprocessing import FunctionTransformer

    return _joblib(d, _fitted_pipeline(FunctionTransformer(np.sqrt)), ["UnsupportedLayerError"],
                   "numpy.sqrt")


@item("item38_joblib_pipeline_unfitted_step")
@_needs_sklearn
def _(d: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pipe = _fitted_pipeline(StandardScaler())
    pipe.steps[1] = ("clf", LogisticRegression())
    return _joblib(d, pipe, ["UnsupportedSourceError"],
                   "step 'clf' (sklearn.linear_model.LogisticRegression) is not fitted")


# --- item 39: a cast that overflows ---------------------------------------------------------------

@item("item39_cast_f32_1e5_to_f16")
def _(d: Path) -> dict[str, Any]:
    w = np.random.default_rng(7).standard_normal((3, 4)).astype("f4")
    w[0, :3] = [1e5, -2e5, 7e4]  # three values beyond float16's 65504
    path = dense_archive(d / "model.safetensors", w, name="big")
    return {"path": str(path), "op": "cast", "dtype": "float16", "expect": ["UnsupportedDtypeError"],
            "match": "3 values"}
