"""scikit-learn in and out: every estimator the reader maps, checked against its own methods.

Each case fits a real estimator, reads it, and compares the numpy runtime, a PyTorch module and
the estimator rebuilt by ``to_sklearn`` with the method the archive's output reproduces.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_close

import weightio
from weightio.errors import UnsupportedLayerError, UnsupportedSourceError

sklearn = pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import (  # noqa: E402
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC, LinearSVR  # noqa: E402

from weightio.frameworks.torch.write.build import run_torch


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=sklearn.exceptions.ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


def _method(est, role: str, X: np.ndarray) -> np.ndarray:
    out = np.asarray(getattr(est, role)(X))
    return out[:, None] if out.ndim == 1 else out


def _cases(X: np.ndarray, y: np.ndarray) -> dict[str, tuple[object, np.ndarray, dict]]:
    yb = (y == 1).astype(int)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    Xr, yr = X[:, :3], X[:, 3]
    two = X[:, 2:]
    multilabel = np.stack([yb, (y == 2).astype(int), (X[:, 0] > 5.8).astype(int)], axis=1)
    return {
        "linear_regression": (LinearRegression().fit(Xr, yr), Xr, {}),
        "linear_regression_multioutput": (LinearRegression().fit(X[:, :2], two), X[:, :2], {}),
        "ridge": (Ridge(alpha=0.5).fit(Xr, yr), Xr, {}),
        "ridge_no_intercept": (Ridge(fit_intercept=False).fit(Xr, yr), Xr, {}),
        "lasso_multioutput": (Lasso(alpha=0.01).fit(X[:, :2], two), X[:, :2], {}),
        "elastic_net": (ElasticNet(alpha=0.01).fit(Xr, yr), Xr, {}),
        "sgd_regressor": (SGDRegressor(random_state=0).fit(Xr, yr), Xr, {}),
        "linear_svr": (LinearSVR(random_state=0).fit(Xr, yr), Xr, {}),
        "logistic_binary": (LogisticRegression().fit(X, yb), X, {}),
        "logistic_binary_decision": (LogisticRegression().fit(X, yb), X, {"head": "decision_function"}),
        "logistic_multinomial_str_labels": (LogisticRegression(max_iter=500).fit(X, labels), X, {}),
        "logistic_multinomial_decision": (
            LogisticRegression(max_iter=500).fit(X, y), X, {"head": "decision_function"}
        ),
        "logistic_ovr": (OneVsRestClassifier(LogisticRegression(max_iter=500)).fit(X, y), X, {}),
        "logistic_ovr_multilabel": (
            OneVsRestClassifier(LogisticRegression(max_iter=500)).fit(X, multilabel), X, {}
        ),
        "sgd_log_loss": (SGDClassifier(loss="log_loss", random_state=0).fit(X, y), X, {}),
        "sgd_hinge": (SGDClassifier(random_state=0).fit(X, y), X, {}),
        "ridge_classifier": (RidgeClassifier().fit(X, y), X, {}),
        "perceptron_binary": (Perceptron(random_state=0).fit(X, yb), X, {}),
        "linear_svc": (LinearSVC(random_state=0).fit(X, y), X, {}),
        "mlp_regressor": (
            MLPRegressor(hidden_layer_sizes=(8, 6), max_iter=50, random_state=0).fit(Xr, yr), Xr, {}
        ),
        "mlp_regressor_multioutput_tanh": (
            MLPRegressor(hidden_layer_sizes=(7,), activation="tanh", max_iter=50, random_state=0).fit(X[:, :2], two),
            X[:, :2],
            {},
        ),
        "mlp_binary_logistic": (
            MLPClassifier((5,), activation="logistic", max_iter=50, random_state=0).fit(X, yb), X, {}
        ),
        "mlp_multiclass_identity": (
            MLPClassifier((5,), activation="identity", max_iter=50, random_state=0).fit(X, y), X, {}
        ),
        "mlp_multilabel": (MLPClassifier((6,), max_iter=50, random_state=0).fit(X, multilabel), X, {}),
        "scalers_pca_pipeline": (
            make_pipeline(MinMaxScaler(), MaxAbsScaler(), PCA(3, whiten=True), Ridge()).fit(Xr, yr),
            Xr,
            {},
        ),
        "standard_pca_mlp_pipeline": (
            make_pipeline(StandardScaler(), PCA(2), MLPClassifier((4,), max_iter=50, random_state=0)).fit(X, y),
            X,
            {},
        ),
        "transformers_only": (make_pipeline(StandardScaler(), PCA(3)).fit(X), X, {}),
    }


CASES = [
    "linear_regression",
    "linear_regression_multioutput",
    "ridge",
    "ridge_no_intercept",
    "lasso_multioutput",
    "elastic_net",
    "sgd_regressor",
    "linear_svr",
    "logistic_binary",
    "logistic_binary_decision",
    "logistic_multinomial_str_labels",
    "logistic_multinomial_decision",
    "logistic_ovr",
    "logistic_ovr_multilabel",
    "sgd_log_loss",
    "sgd_hinge",
    "ridge_classifier",
    "perceptron_binary",
    "linear_svc",
    "mlp_regressor",
    "mlp_regressor_multioutput_tanh",
    "mlp_binary_logistic",
    "mlp_multiclass_identity",
    "mlp_multilabel",
    "scalers_pca_pipeline",
    "standard_pca_mlp_pipeline",
    "transformers_only",
]


@pytest.fixture(scope="module")
def cases(iris):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short fits on purpose: convergence is not the point
        built = _cases(*iris)
    assert sorted(built) == sorted(CASES)
    return built


@pytest.mark.parametrize("case", CASES)
def test_estimator_round_trip_matches_its_own_method(case: str, cases) -> None:
    est, X, options = cases[case]
    archive = weightio.read(est, **options)
    output = archive.spec.outputs[0]
    role = output.role
    expected = _method(est, role, X)
    assert_close(expected, weightio.run(archive, X))
    assert_close(expected, run_torch(weightio.to_torch(archive), [X])[0])
    rebuilt = weightio.to_sklearn(archive)
    assert type(rebuilt) is type(est)
    assert_close(expected, _method(rebuilt, role, X))
    if sklearn.base.is_classifier(est):
        assert np.array_equal(np.asarray(rebuilt.predict(X)), np.asarray(est.predict(X)))
    if hasattr(est, "classes_"):
        assert output.class_labels == np.asarray(est.classes_).tolist()
    # and the archive survives the file round trip
    path_archive = weightio.Archive(archive.spec, archive.tensors)
    assert_close(expected, weightio.run(path_archive, X))


def test_binary_classifier_forward_pass_gives_both_probability_columns(iris) -> None:
    X, y = iris
    clf = LogisticRegression().fit(X, (y == 2).astype(int))
    archive = weightio.read(clf)
    proba = weightio.run(archive, X)
    assert proba.shape == (len(X), 2)
    assert_close(clf.predict_proba(X), proba)
    scores = weightio.run(weightio.read(clf, head="decision_function"), X)
    assert_close(clf.decision_function(X)[:, None], scores)


def test_classic_linear_regression_archive_holds_exactly_coef_and_intercept(tmp_path) -> None:
    X = np.array([[1, 1], [1, 2], [2, 2], [2, 3]], dtype=float)
    noise = np.random.default_rng(0).normal(scale=0.01, size=4)
    y = X @ np.array([1.0, 2.0]) + 3 + noise
    reg = LinearRegression().fit(X, y)
    archive = weightio.read(reg)
    weightio.save(archive, tmp_path / "reg.safetensors")
    loaded = weightio.load(tmp_path / "reg.safetensors")
    assert sorted(loaded.tensors) == ["linear_regression.bias", "linear_regression.weight"]
    assert np.array_equal(loaded.tensor("linear_regression", "weight"), reg.coef_[None, :])
    assert np.array_equal(loaded.tensor("linear_regression", "bias"), [reg.intercept_])
    expected = reg.predict(X)[:, None]
    assert_close(expected, weightio.run(loaded, X))
    assert_close(expected, run_torch(weightio.to_torch(loaded), [X])[0])
    keras_model = weightio.to_keras(loaded)
    assert_close(expected, np.asarray(keras_model(X)))
    back = weightio.to_sklearn(loaded)
    assert type(back) is LinearRegression and back.coef_.shape == reg.coef_.shape
    assert np.array_equal(back.predict(X), reg.predict(X))


def test_iris_pipeline_to_keras_and_torch_matches_predict_proba(iris, tmp_path) -> None:
    X, y = iris
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    archive = weightio.read(pipe)
    assert [layer.kind for layer in archive.spec.layers] == ["affine", "dense"]
    assert archive.spec.outputs[0].class_labels == [0, 1, 2]
    expected = pipe.predict_proba(X)
    assert_close(expected, np.asarray(weightio.to_keras(archive)(X)), tol=1e-5)
    assert_close(expected, run_torch(weightio.to_torch(archive), [X])[0], tol=1e-5)
    # float32, as a GPU user would want it: still within the float32 tolerance
    small = weightio.read(pipe, dtype="float32")
    assert {ref.dtype for _, _, ref in small.spec.tensor_refs()} == {"F32"}
    x32 = X.astype(np.float32)
    assert_close(expected, np.asarray(weightio.to_keras(small)(x32)), tol=1e-5)
    assert_close(expected, run_torch(weightio.to_torch(small), [x32])[0], tol=1e-5)
    result = weightio.convert(pipe, tmp_path / "pipe.pt2")
    assert result.verification is not None and result.verification.passed
    assert result.verification.checks[0].witnesses == ("sklearn", "numpy")


def test_digits_mlp_to_torch_and_back_to_sklearn_predicts_the_same_labels() -> None:
    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=40, random_state=0).fit(X, y)
    archive = weightio.read(clf)
    module = weightio.to_torch(archive)
    assert_close(clf.predict_proba(X), run_torch(module, [X])[0])
    from_torch = weightio.read(module)
    back = weightio.to_sklearn(from_torch, classes=archive.spec.outputs[0].class_labels)
    assert type(back) is MLPClassifier and back.activation == "relu"
    assert np.array_equal(back.predict(X), clf.predict(X))
    assert_close(clf.predict_proba(X), back.predict_proba(X))


def test_torch_mlp_to_sklearn_regressor_matches_torch() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
        torch.nn.Linear(8, 2),
    )
    X = np.random.default_rng(0).standard_normal((20, 5)).astype(np.float32)
    reg = weightio.to_sklearn(weightio.read(net))
    assert type(reg) is MLPRegressor and reg.hidden_layer_sizes == (16, 8)
    assert reg.coefs_[0].dtype == np.float32  # the archive's dtype, never cast
    assert_close(run_torch(net, [X])[0], reg.predict(X))


def test_torch_affine_module_reads_back_as_affine(iris) -> None:
    X, y = iris
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    module = weightio.to_torch(weightio.read(pipe))
    again = weightio.read(module)
    assert [layer.kind for layer in again.spec.layers] == ["affine", "dense", "activation"]
    back = weightio.to_sklearn(again, classes=[0, 1, 2])
    assert_close(pipe.predict_proba(X), back.predict_proba(X))
    module.train()  # the scaler is no BatchNorm: train mode computes the same thing
    with torch.no_grad():
        assert_close(pipe.predict_proba(X), module(torch.from_numpy(X)).numpy())


# -- refusals -------------------------------------------------------------------------------


def test_unsupported_estimator_is_named_with_the_supported_list(iris) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    with pytest.raises(UnsupportedLayerError, match="DecisionTreeClassifier") as info:
        weightio.read(make_pipeline(StandardScaler(), DecisionTreeClassifier()).fit(X, y))
    assert "LogisticRegression" in str(info.value) and "MLPClassifier" in str(info.value)


def test_unfitted_estimator_and_missing_head_are_refused(iris) -> None:
    X, y = iris
    with pytest.raises(UnsupportedSourceError, match="not fitted"):
        weightio.read(LogisticRegression())
    with pytest.raises(UnsupportedSourceError, match="decision_function"):
        weightio.read(MLPClassifier(max_iter=5).fit(X, y), head="decision_function")
    with pytest.raises(UnsupportedSourceError, match="predict_proba"):
        weightio.read(LinearSVC().fit(X, y), head="predict_proba")


def test_subclass_is_not_guessed_at(iris) -> None:
    class Mine(LogisticRegression):
        def predict_proba(self, X):  # pragma: no cover - never called
            return super().predict_proba(X) ** 2

    X, y = iris
    with pytest.raises(UnsupportedLayerError, match="Mine"):
        weightio.read(Mine().fit(X, y))


def test_to_sklearn_refuses_mixed_hidden_activations_by_layer_name() -> None:
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
        torch.nn.Linear(8, 1),
    )
    with pytest.raises(UnsupportedLayerError, match="mix") as info:
        weightio.to_sklearn(weightio.read(net))
    assert info.value.layer in {"_0", "_2", "0", "2"} or "relu" in str(info.value)


def test_to_sklearn_refuses_activations_sklearn_lacks_and_other_kinds() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    with pytest.raises(UnsupportedLayerError, match="gelu"):
        weightio.to_sklearn(weightio.read(net))
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(4, 1))
    archive = weightio.read(conv, example_input=torch.zeros(2, 1, 4))
    with pytest.raises(UnsupportedLayerError, match="conv") as info:
        weightio.to_sklearn(archive)
    assert info.value.layer is not None


def test_regressor_with_an_output_activation_needs_classes() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1))
    archive = weightio.read(net)
    with pytest.raises(UnsupportedLayerError, match="classes="):
        weightio.to_sklearn(archive)
    clf = weightio.to_sklearn(archive, classes=["a", "b", "c"])
    X = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    assert_close(run_torch(net, [X])[0], clf.predict_proba(X))
    assert set(clf.predict(X)) <= {"a", "b", "c"}


def test_every_spec_kind_runs_and_writes_to_keras_and_torch() -> None:
    from weightio.frameworks.keras.write.base import KERAS_WRITE
    from weightio.frameworks.sklearn.read import SKLEARN_READ
    from weightio.frameworks.sklearn.write import SKLEARN_WRITE
    from weightio.frameworks.torch.write.base import TORCH_WRITE
    from weightio.runtime.base import RUNTIME
    from weightio.spec.layers import LAYER_KINDS

    for registry in (RUNTIME, KERAS_WRITE, TORCH_WRITE):
        assert set(LAYER_KINDS) <= set(registry.keys()), registry.framework
    assert SKLEARN_READ.kinds() <= set(LAYER_KINDS)
    assert {"affine", "dense", "activation", "binary_proba"} <= set(SKLEARN_WRITE.keys())
    assert len(SKLEARN_READ.keys()) == 18


def test_import_weightio_and_reading_an_archive_stay_free_of_sklearn(tmp_path) -> None:
    import subprocess
    import sys

    X, y = load_iris(return_X_y=True)
    weightio.save(weightio.read(LogisticRegression(max_iter=500).fit(X, y)), tmp_path / "a.safetensors")
    code = (
        "import sys, numpy as np, weightio\n"
        f"a = weightio.load({str(tmp_path / 'a.safetensors')!r})\n"
        "weightio.run(a, np.ones((2, 4)))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'skops', 'torch')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
