"""Verification never hands Keras a config that names anything but Keras' own classes.

``weightio convert m.keras out.safetensors`` checks its result against Keras' own reading of the
file. Keras' loader imports the ``module`` a config names and looks ``registered_name`` up among
custom objects, so the config is checked first, without Keras, against an allowlist of Keras'
layers, initializers, regularizers, constraints, activations and models. Real Keras files are
saved here and then edited the way an attacker would; ``convert`` runs in a child process whose
audit hook records every import: a refused file never imports the named module, nor TensorFlow,
nor Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")

from weightio.frameworks.keras.files import config_checks  # noqa: E402
from weightio.frameworks.keras.files.config_checks import check_keras_objects  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]

_CONVERT_AUDITED = r"""
import json, sys
imports = []
sys.addaudithook(lambda event, args: imports.append(str(args[0])) if event == "import" else None)
from weightio.cli import main
result = sys.argv[3]
sys.argv = ["weightio", "convert", sys.argv[1], sys.argv[2]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(result, "w") as handle:
    json.dump({"code": code, "imports": imports}, handle)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("allowlist")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="dense"),
                              keras.layers.Dense(2, name="head")])
    model.save(folder / "model.keras")
    return folder / "model.keras"


def _edited(source: Path, target: Path, edit: Any) -> Path:
    with zipfile.ZipFile(source) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return target


def _first_dense(config: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in config["config"]["layers"] if c["class_name"] == "Dense")


EDITS = {
    "module_os": lambda c: _first_dense(c).update(module="os"),
    "module_outside": lambda c: _first_dense(c).update(module="weightio_evil_module"),
    "registered_custom": lambda c: _first_dense(c).update(registered_name="Evil>Dense"),
    "initializer_outside": lambda c: _first_dense(c)["config"].update(kernel_initializer={
        "module": "weightio_evil_module", "class_name": "Init", "config": {},
        "registered_name": None}),
    "lambda_layer": lambda c: _first_dense(c).update(class_name="Lambda"),
    "model_module": lambda c: c.update(module="weightio_evil_module"),
}


def _convert_audited(path: Path, tmp_path: Path, extra_path: Path | None = None) -> dict[str, Any]:
    result = tmp_path / "result.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *([str(extra_path)] if extra_path else []), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _CONVERT_AUDITED, str(path),
                          str(tmp_path / "out.safetensors"), str(result)],
                         capture_output=True, text=True, env=env, timeout=600)
    data = json.loads(result.read_text())
    data["stderr"] = out.stderr
    return data


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_convert_refuses_a_config_naming_anything_but_keras_own(edit: str, saved: Path,
                                                                  tmp_path: Path) -> None:
    path = _edited(saved, tmp_path / "model.keras", EDITS[edit])
    # a module of that name exists and would leave a canary if imported
    modules = tmp_path / "modules"
    modules.mkdir()
    canary = tmp_path / "CANARY"
    (modules / "weightio_evil_module.py").write_text(
        f"open({str(canary)!r}, 'w').write('imported')\nclass Init: pass\n")
    result = _convert_audited(path, tmp_path, modules)
    assert result["code"] == 2, result["stderr"]
    assert result["stderr"].count("\n") == 1 and "model.keras" in result["stderr"]
    assert "error:" in result["stderr"]
    assert not (tmp_path / "out.safetensors").exists()
    assert not canary.exists()
    top = {name.split(".")[0] for name in result["imports"]}
    assert not top & {"weightio_evil_module", "tensorflow", "keras", "tf_keras"}, sorted(top)
    if edit in ("module_os", "module_outside", "registered_custom", "initializer_outside"):
        assert "UnsafeFormat" not in result["stderr"]  # the CLI prints the message, one line
        assert "allowlist" in result["stderr"] or "custom object" in result["stderr"]
        assert "'dense'" in result["stderr"]


def test_a_keras_file_of_keras_own_classes_still_verifies_through_keras(saved: Path,
                                                                        tmp_path: Path) -> None:
    import weightio

    result = weightio.convert(saved, tmp_path / "out.safetensors")
    assert result.verification is not None and result.verification.passed
    assert {c.witnesses for c in result.verification.checks} >= {("keras", "numpy")}


def test_the_allowlist_names_only_keras_classes() -> None:
    """Every allowlisted name is a class of that Keras module, and none carries code."""
    for names, module in ((config_checks.KERAS_LAYERS, keras.layers),
                          (config_checks.KERAS_INITIALIZERS, keras.initializers),
                          (config_checks.KERAS_REGULARIZERS, keras.regularizers),
                          (config_checks.KERAS_CONSTRAINTS, keras.constraints),
                          (config_checks.KERAS_DTYPE_POLICIES, keras.dtype_policies)):
        for name in names:
            assert isinstance(getattr(module, name, None), type), (module.__name__, name)
    for name in config_checks.KERAS_ACTIVATIONS:
        assert callable(getattr(keras.activations, name, None)), name
    assert not config_checks.KERAS_LAYERS & {"Lambda", "TFSMLayer", "JaxLayer", "FlaxLayer",
                                             "TorchModuleWrapper", "Layer", "Wrapper"}


def test_configs_keras_writes_pass(tmp_path: Path) -> None:
    inp = keras.Input((8, 4))
    x = keras.layers.Bidirectional(keras.layers.LSTM(
        3, return_sequences=True, kernel_regularizer=keras.regularizers.L2(0.1),
        kernel_constraint=keras.constraints.MaxNorm(2)))(inp)
    x = keras.layers.TimeDistributed(keras.layers.Dense(2, activation=keras.activations.gelu))(x)
    x = keras.layers.Conv1D(2, 3, kernel_initializer=keras.initializers.HeNormal(seed=1))(x)
    x = keras.layers.RNN(keras.layers.GRUCell(2))(x)
    y = keras.layers.Dense(1, activation="sigmoid", dtype="mixed_float16")(x)
    model = keras.Model(inp, y)
    model.compile(optimizer="adam", loss="mse")
    check_keras_objects(keras.saving.serialize_keras_object(model), file="m.keras")
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Activation(
        keras.activations.swish)])
    check_keras_objects(keras.saving.serialize_keras_object(seq), file="m.keras")


def test_the_allowlisted_operations_are_keras_operations() -> None:
    import importlib

    from keras.src.ops.operation import Operation

    for module, names in config_checks.KERAS_OPS.items():
        found = importlib.import_module(module)
        for name in names:
            assert issubclass(getattr(found, name), Operation), (module, name)
    assert not config_checks.KERAS_OPS["keras.src.ops.core"] & {"Map", "Scan", "Cond", "WhileLoop"}
