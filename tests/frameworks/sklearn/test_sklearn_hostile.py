"""Battery items 37-38 in memory and with trust (the file cases live in the battery):
skops types the user vouches for, FunctionTransformer steps, unfitted estimators and steps."""

from __future__ import annotations

import operator
import warnings

import numpy as np
import pytest
from conftest import assert_close

import weightio
from weightio.errors import UnsafeFormatError, UnsupportedLayerError, UnsupportedSourceError

sklearn = pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")
sio = pytest.importorskip("skops.io")

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


def _pipe(first, X, y, head=None):
    return Pipeline([("prep", first), ("clf", head or LogisticRegression(max_iter=500))]).fit(X, y)


# -- item 37: a type outside the allowlist, and the same file once the user vouches for it -------

def test_skops_type_the_user_trusts_then_loads(iris, tmp_path) -> None:
    X, y = iris
    est = Pipeline([("sc", StandardScaler()), ("clf", LogisticRegression(max_iter=500))],
                   memory=joblib.Memory(None)).fit(X, y)
    path = tmp_path / "cached.skops"
    sio.dump(est, path)
    assert sio.get_untrusted_types(file=path) == ["joblib.memory.Memory"]
    with pytest.raises(UnsafeFormatError) as info:
        weightio.read(path)
    message = str(info.value)
    assert "joblib.memory.Memory" in message and "cached.skops" in message
    assert "trusted=['joblib.memory.Memory']" in message  # what to pass, spelled out
    archive = weightio.read(path, trusted=["joblib.memory.Memory"])
    assert_close(est.predict_proba(X), weightio.run(archive, X))


def test_trusting_a_function_type_loads_it_but_the_step_is_still_refused(iris, tmp_path) -> None:
    X, y = iris
    path = tmp_path / "neg.skops"
    sio.dump(_pipe(FunctionTransformer(operator.neg), X, y), path)
    with pytest.raises(UnsupportedLayerError, match=r"step 'prep'.*_operator\.neg") as info:
        weightio.read(path, trusted=["_operator.neg"])  # skops builds it; weightio never calls it
    assert "neg.skops" in str(info.value)


# -- item 38: FunctionTransformer ------------------------------------------------------------------

def test_function_transformer_lambda_is_refused_naming_step_and_class(iris) -> None:
    X, y = iris
    called = []
    pipe = _pipe(FunctionTransformer(lambda x: x), X, y)
    pipe.steps[0][1].func = lambda x: called.append(1) or x
    with pytest.raises(UnsupportedLayerError) as info:
        weightio.read(pipe)
    message = str(info.value)
    assert "step 'prep'" in message and "sklearn.preprocessing.FunctionTransformer" in message
    assert "a lambda defined in" in message and "Apply the function" in message
    assert info.value.layer == "prep"
    assert not called  # never run to find out what it does


def test_function_transformer_named_function_is_refused_by_name(iris) -> None:
    X, y = iris
    for func, name in ((np.log1p, "numpy.log1p"), (operator.neg, "_operator.neg")):
        with pytest.raises(UnsupportedLayerError, match=rf"step 'prep'.*{name.replace('.', '[.]')}"):
            weightio.read(_pipe(FunctionTransformer(func), np.abs(X), y))


def test_identity_function_transformer_is_read_and_round_trips(iris, tmp_path) -> None:
    X, y = iris
    est = Pipeline([("sc", StandardScaler()), ("noop", FunctionTransformer()),
                    ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    archive = weightio.read(est)
    assert [layer.kind for layer in archive.spec.layers][:2] == ["affine", "identity"]
    assert_close(est.predict_proba(X), weightio.run(archive, X))
    rebuilt = weightio.to_sklearn(archive)  # the identity step is dropped; the rest keeps its class
    assert type(rebuilt.steps[-1][1]) is LogisticRegression
    assert_close(est.predict_proba(X), rebuilt.predict_proba(X))
    result = weightio.convert(est, tmp_path / "noop.skops")
    assert result.verification is not None and result.verification.passed
    # a Pipeline that only passes data through (a regressor after an identity first step)
    reg = _pipe(FunctionTransformer(), X, X[:, 0], head=Ridge())
    assert_close(reg.predict(X)[:, None], weightio.run(weightio.read(reg), X))


# -- item 38: unfitted estimators and steps --------------------------------------------------------

def test_unfitted_estimator_is_refused_with_what_to_do() -> None:
    with pytest.raises(UnsupportedSourceError, match="LogisticRegression is not fitted") as info:
        weightio.read(LogisticRegression())
    assert "fit it" in str(info.value)


@pytest.mark.parametrize("position", [0, 1])
def test_pipeline_with_one_unfitted_step_names_that_step(iris, position) -> None:
    X, y = iris
    pipe = _pipe(StandardScaler(), X, y)
    fresh = [StandardScaler(), LogisticRegression()][position]
    pipe.steps[position] = (pipe.steps[position][0], fresh)
    name = pipe.steps[position][0]
    with pytest.raises(UnsupportedSourceError) as info:
        weightio.read(pipe)
    message = str(info.value)
    assert f"step {name!r} ({type(fresh).__module__.split('.')[0]}." in message
    assert type(fresh).__name__ in message and "not fitted" in message and "fit" in message
    assert info.value.layer == name


def test_unfitted_pipeline_in_a_trusted_joblib_names_file_and_step(iris, tmp_path) -> None:
    X, y = iris
    pipe = _pipe(StandardScaler(), X, y)
    pipe.steps[1] = ("clf", LogisticRegression())
    path = tmp_path / "half.joblib"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joblib.dump(pipe, path)
    with pytest.raises(UnsupportedSourceError, match="half.joblib.*step 'clf'"):
        weightio.read(path, trust_pickle=True)
