"""scikit-learn files, the Keras side, and the CLI: pickles need trust, .skops is audited."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import weightio
from weightio.errors import UnsafeFormatError

sklearn = pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")
sio = pytest.importorskip("skops.io")

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402


@pytest.fixture(scope="module")
def pipe() -> tuple[object, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y), X


def _no_temp_files(folder: Path) -> bool:
    return not any(".weightio-tmp-" in p.name for p in folder.iterdir())


def test_pickles_are_refused_unless_trusted(pipe, tmp_path) -> None:
    est, X = pipe
    for suffix in (".pkl", ".joblib"):
        path = tmp_path / f"model{suffix}"
        joblib.dump(est, path)
        with pytest.raises(UnsafeFormatError, match="trust_pickle=True"):
            weightio.read(path)
        archive = weightio.read(path, trust_pickle=True)
        assert archive.spec.provenance.source_file == path.name
        assert_close(est.predict_proba(X), weightio.run(archive, X))


def test_skops_is_read_through_its_audit(tmp_path) -> None:
    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(X, y)
    path = tmp_path / "mlp.skops"
    sio.dump(mlp, path)
    # skops flags the fitted optimizer's type; it is on weightio's data-only allowlist
    assert sio.get_untrusted_types(file=path)
    assert_close(mlp.predict_proba(X), weightio.run(weightio.read(path), X))


def test_skops_with_an_untrusted_type_is_refused_by_name(tmp_path) -> None:
    X, y = load_iris(return_X_y=True)
    odd = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=500)).fit(X, y)
    path = tmp_path / "odd.skops"
    sio.dump(odd, path)
    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted == ["_operator.neg"]
    with pytest.raises(UnsafeFormatError) as info:  # refused by the audit, before loading
        weightio.read(path)
    assert "_operator.neg" in str(info.value)


def test_convert_writes_skops_and_joblib_atomically_after_verifying(pipe, tmp_path) -> None:
    est, X = pipe
    archive_path = tmp_path / "pipe.safetensors"
    weightio.convert(est, archive_path)
    for name in ("pipe.skops", "pipe.joblib"):
        result = weightio.convert(archive_path, tmp_path / name)
        assert result.verification is not None and result.verification.passed
        loaded = (
            sio.load(tmp_path / name, trusted=[])
            if name.endswith(".skops")
            else joblib.load(tmp_path / name)
        )
        assert_close(est.predict_proba(X), loaded.predict_proba(X))
        assert np.array_equal(loaded.predict(X), est.predict(X))
    assert _no_temp_files(tmp_path)


def test_cli_trust_pickle_and_head(pipe, tmp_path) -> None:
    est, X = pipe
    joblib.dump(est, tmp_path / "m.joblib")
    cmd = [sys.executable, "-m", "weightio", "convert", str(tmp_path / "m.joblib")]
    refused = subprocess.run(
        [*cmd, str(tmp_path / "a.safetensors")], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and "--trust-pickle" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "a.safetensors").exists()
    done = subprocess.run(
        [*cmd, str(tmp_path / "a.safetensors"), "--trust-pickle", "--head", "decision_function"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    archive = weightio.load(tmp_path / "a.safetensors")
    assert archive.spec.outputs[0].role == "decision_function"
    assert_close(est.decision_function(X), weightio.run(archive, X))


# -- Keras -> scikit-learn, and scikit-learn -> Keras ---------------------------------------


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return pytest.importorskip("keras")


_NO_TF_SCRIPT = """
import sys, numpy as np, weightio
archive = weightio.load(sys.argv[1])
reg = weightio.to_sklearn(archive)
pred = reg.predict(np.load(sys.argv[2]))
expected = np.load(sys.argv[3])
assert type(reg).__name__ == "MLPRegressor", type(reg)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
assert not heavy, heavy
scale = max(1.0, float(np.abs(expected).max()))
worst = float(np.abs(pred.reshape(expected.shape) - expected).max())
assert worst <= 1e-5 * scale, worst
print("ok", worst)
"""


def test_keras_mlp_to_sklearn_without_tensorflow(keras, tmp_path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    X = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    expected = np.asarray(model(X))
    weightio.save(weightio.read(model), tmp_path / "mlp.safetensors")
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", expected)
    out = subprocess.run(
        [sys.executable, "-c", _NO_TF_SCRIPT, str(tmp_path / "mlp.safetensors"),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_keras_softmax_classifier_to_sklearn_and_rescaling_reads_back(keras, pipe) -> None:
    est, X = pipe
    model = weightio.to_keras(weightio.read(est))
    assert [type(layer).__name__ for layer in model.layers] == ["Rescaling", "Dense"]
    again = weightio.read(model)
    assert [layer.kind for layer in again.spec.layers] == ["affine", "dense"]
    back = weightio.to_sklearn(again, classes=[0, 1, 2])
    assert_close(est.predict_proba(X), back.predict_proba(X))
    assert type(back.steps[0][1]).__name__ == "StandardScaler"


def test_keras_binary_classifier_round_trip_recognises_the_probability_columns(keras) -> None:
    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression().fit(X, (y == 1).astype(int))
    model = weightio.to_keras(weightio.read(clf))
    assert_close(clf.predict_proba(X), np.asarray(model(X)))
    back = weightio.to_sklearn(weightio.read(model), classes=[0, 1])
    assert type(back).__name__ == "LogisticRegression" and back.coef_.shape == (1, 4)
    assert_close(clf.predict_proba(X), back.predict_proba(X))
