"""Fitted-state construction of scikit-learn estimators from canonical layers.

Each builder creates the estimator with its parameters and sets exactly the fitted attributes
its ``predict`` / ``predict_proba`` / ``decision_function`` / ``transform`` read, in the
archive's dtype. Used by ``sklearn_write.to_sklearn``; scikit-learn is imported lazily.
"""

from __future__ import annotations

import importlib
import math
import re
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.optional import require

_MLP_NAMES = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic", "linear": "identity"}

LINEAR_REGRESSORS = (
    "sklearn.linear_model.LinearRegression",
    "sklearn.linear_model.Ridge",
    "sklearn.linear_model.Lasso",
    "sklearn.linear_model.ElasticNet",
    "sklearn.linear_model.SGDRegressor",
    "sklearn.svm.LinearSVR",
)
_SINGLE_OUTPUT = ("sklearn.linear_model.SGDRegressor", "sklearn.svm.LinearSVR")
LINEAR_CLASSIFIERS = (
    "sklearn.linear_model.LogisticRegression",
    "sklearn.linear_model.SGDClassifier",
    "sklearn.linear_model.RidgeClassifier",
    "sklearn.linear_model.Perceptron",
    "sklearn.svm.LinearSVC",
)


def _class(public: str) -> type:
    module, name = public.rsplit(".", 1)
    return getattr(require(module, purpose="building scikit-learn estimators"), name)


def _make(public: str, hint: dict[str, Any], **overrides: Any) -> Any:
    """``cls(**params)`` with the hint's parameters the class accepts, then ``overrides``."""
    cls = _class(public)
    est = cls()
    accepted = est.get_params(deep=False)
    params = {k: v for k, v in (hint.get("params") or {}).items() if k in accepted}
    for key, value in params.items():  # JSON made the tuples lists
        if isinstance(value, list):
            params[key] = tuple(value)
    params.update({k: v for k, v in overrides.items() if k in accepted})
    return est.set_params(**params)


def _arr(archive: Archive, ref: Any) -> np.ndarray:
    return np.array(archive.tensors[ref.key])


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _name(hint: dict[str, Any], est: Any) -> str:
    return str(hint.get("name") or _snake(type(est).__name__))


def _dense_arrays(layer: Any, archive: Archive) -> tuple[np.ndarray, np.ndarray | None]:
    weight = _arr(archive, layer.weight)
    bias = None if layer.bias is None else _arr(archive, layer.bias)
    return weight, bias


# -- transformers ---------------------------------------------------------------------------


def scaler(layer: Any, archive: Archive, hint: dict[str, Any], n_features: int) -> tuple[str, Any]:
    """An affine layer -> the hinted scaler, else StandardScaler (MinMaxScaler if a scale is 0)."""
    scale = _arr(archive, layer.scale)
    offset = _arr(archive, layer.offset)
    wanted = hint.get("class")
    if wanted not in ("sklearn.preprocessing.MinMaxScaler", "sklearn.preprocessing.MaxAbsScaler"):
        wanted = "sklearn.preprocessing.StandardScaler"
    if np.any(scale == 0) or (wanted.endswith("MaxAbsScaler") and np.any(offset != 0)):
        wanted = "sklearn.preprocessing.MinMaxScaler"
    est = _make(wanted, hint)
    est.n_features_in_ = layer.features
    with np.errstate(divide="ignore", invalid="ignore"):
        if wanted.endswith("StandardScaler"):
            est.set_params(with_mean=True, with_std=True)
            est.scale_ = 1.0 / scale
            est.mean_ = -offset / scale
            est.var_ = est.scale_**2
            est.n_samples_seen_ = 0
        elif wanted.endswith("MaxAbsScaler"):
            est.scale_ = 1.0 / scale
            est.max_abs_ = est.scale_.copy()
            est.n_samples_seen_ = 0
        else:
            low, high = est.feature_range
            est.set_params(clip=False)
            est.scale_ = scale
            est.min_ = offset
            est.data_range_ = (high - low) / scale
            est.data_min_ = (low - offset) / scale
            est.data_max_ = est.data_min_ + est.data_range_
            est.n_samples_seen_ = 0
    return _name(hint, est) if hint else "scaler", est


def pca(layer: Any, archive: Archive, hint: dict[str, Any], n_features: int) -> tuple[str, Any]:
    """A dense layer the hint marks as PCA -> a PCA whose ``transform`` reproduces it.

    Whitened rows are ``components_ / sqrt(explained_variance_)`` with unit-norm components,
    so both are recovered from the row norms; ``mean_`` is the least-squares solution of
    ``bias = -weight @ mean_``. Statistics the archive does not hold (``explained_variance_``
    without whitening, ``noise_variance_``) are NaN.
    """
    weight, bias = _dense_arrays(layer, archive)
    whiten = bool((hint.get("params") or {}).get("whiten", False))
    est = _make("sklearn.decomposition.PCA", hint, n_components=layer.units, whiten=whiten)
    if whiten:
        scale = 1.0 / np.linalg.norm(weight, axis=1)
        est.components_ = weight * scale[:, None]
        est.explained_variance_ = scale**2
    else:
        est.components_ = weight
        est.explained_variance_ = np.full(layer.units, np.nan, dtype=weight.dtype)
    est.explained_variance_ratio_ = np.full(layer.units, np.nan, dtype=weight.dtype)
    est.singular_values_ = np.full(layer.units, np.nan, dtype=weight.dtype)
    est.noise_variance_ = np.nan
    bias = np.zeros(layer.units, weight.dtype) if bias is None else bias
    est.mean_ = (-(np.linalg.pinv(weight.astype(np.float64)) @ bias)).astype(weight.dtype)
    est.n_components_ = layer.units
    est.n_features_in_ = layer.in_features
    est.n_samples_ = 0
    return _name(hint, est), est


# -- models ---------------------------------------------------------------------------------


def _refuse(unit: Any, message: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(message, layer=unit.dense.name)


def _labels(classes: list[Any] | None, count: int, unit: Any) -> np.ndarray:
    if classes is None:
        classes = list(range(count))
    if len(classes) != count:
        raise _refuse(unit, f"the model has {count} classes but {len(classes)} labels were given")
    return np.asarray(classes)


def model(
    units: list[Any],
    archive: Archive,
    hint: dict[str, Any],
    *,
    classes: list[Any] | None,
    role: str | None,
    output_ndim: int,
    n_features: int,
) -> tuple[str, Any]:
    """Dense units -> a linear model (one unit) or an MLP (several)."""
    classifier = classes is not None or role in ("predict_proba", "decision_function")
    if len(units) == 1:
        if classifier:
            est = _linear_classifier(units[0], archive, hint, classes, role)
        else:
            est = _linear_regressor(units[0], archive, hint, output_ndim)
    else:
        est = _mlp(units, archive, hint, classes if classifier else None, classifier, role)
    est.n_features_in_ = n_features
    return _name(hint, est), est


def _linear_regressor(unit: Any, archive: Archive, hint: dict[str, Any], output_ndim: int) -> Any:
    if unit.acts or unit.binary_proba:
        raise _refuse(
            unit,
            f"a linear regressor has no output activation in scikit-learn, this layer applies "
            f"{', '.join(unit.names)}; pass classes= if the model is a classifier",
        )
    weight, bias = _dense_arrays(unit.dense, archive)
    wanted = hint.get("class")
    if wanted not in LINEAR_REGRESSORS or (wanted in _SINGLE_OUTPUT and weight.shape[0] != 1):
        wanted = "sklearn.linear_model.LinearRegression"
    est = _make(wanted, hint, fit_intercept=bias is not None)
    one_d = output_ndim == 1 and weight.shape[0] == 1
    est.coef_ = weight[0].copy() if one_d else weight
    if wanted in _SINGLE_OUTPUT:
        est.coef_ = weight[0].copy()
        est.intercept_ = np.zeros(1, weight.dtype) if bias is None else bias
    elif bias is None:
        est.intercept_ = 0.0 if one_d else np.zeros(weight.shape[0], weight.dtype)
    else:
        est.intercept_ = bias[0] if one_d else bias
    return est


def _fold_two_way_softmax(weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Softmax over two logits = [1 - sigmoid(d), sigmoid(d)] with d = logit1 - logit0."""
    folded = (weight[1] - weight[0])[None, :]
    return folded, None if bias is None else (bias[1:] - bias[:1])


def _linear_classifier(
    unit: Any, archive: Archive, hint: dict[str, Any], classes: list[Any] | None, role: str | None
) -> Any:
    weight, bias = _dense_arrays(unit.dense, archive)
    k = weight.shape[0]
    names = unit.names
    wanted = hint.get("class")
    if names == [] and role != "predict_proba":
        labels = _labels(classes, 2 if k == 1 else k, unit)
        if wanted == "sklearn.multiclass.OneVsRestClassifier" and k > 1:
            return _one_vs_rest(weight, bias, labels, hint, multilabel=bool(hint.get("multilabel")))
        return _linear_clf(wanted if wanted in LINEAR_CLASSIFIERS else None, weight, bias, labels, hint)
    if names == ["sigmoid"] and k == 1:
        labels = _labels(classes, 2, unit)
        keep = wanted if wanted in ("sklearn.linear_model.SGDClassifier",) else None
        return _linear_clf(keep, weight, bias, labels, hint)
    if names == ["softmax"] and unit.acts[0].axis in (-1, 1):
        if k == 2:
            weight, bias = _fold_two_way_softmax(weight, bias)
            return _linear_clf(None, weight, bias, _labels(classes, 2, unit), hint)
        return _linear_clf(None, weight, bias, _labels(classes, k, unit), hint)
    if names == ["log_sigmoid", "softmax"] and unit.acts[1].axis in (-1, 1) and k > 1:
        labels = _labels(classes, k, unit)
        if wanted == "sklearn.linear_model.SGDClassifier":
            return _linear_clf(wanted, weight, bias, labels, hint)
        return _one_vs_rest(weight, bias, labels, hint, multilabel=False)
    if names == ["sigmoid"] and k > 1:
        labels = _labels(classes, k, unit)
        return _one_vs_rest(weight, bias, labels, hint, multilabel=True)
    raise _refuse(
        unit,
        f"no scikit-learn linear classifier ends in {' then '.join(names) or 'no activation'} "
        f"over {k} output(s); supported: sigmoid (binary or multilabel), softmax, "
        "log_sigmoid then softmax (one-vs-rest), or plain scores",
    )


def _linear_clf(
    wanted: str | None, weight: np.ndarray, bias: np.ndarray | None, labels: np.ndarray, hint: dict[str, Any]
) -> Any:
    public = wanted or "sklearn.linear_model.LogisticRegression"
    est = _make(public, hint if wanted else {}, fit_intercept=bias is not None)
    est.coef_ = weight
    est.intercept_ = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias
    est.classes_ = labels
    est.n_iter_ = np.zeros(1, dtype=np.int32)
    if public.endswith("RidgeClassifier"):
        preprocessing = require("sklearn.preprocessing", purpose="building scikit-learn estimators")
        est._label_binarizer = preprocessing.LabelBinarizer(pos_label=1, neg_label=-1).fit(labels)
    return est


def _one_vs_rest(
    weight: np.ndarray, bias: np.ndarray | None, labels: np.ndarray, hint: dict[str, Any], *, multilabel: bool
) -> Any:
    multiclass = require("sklearn.multiclass", purpose="building scikit-learn estimators")
    preprocessing = require("sklearn.preprocessing", purpose="building scikit-learn estimators")
    inner_public = hint.get("estimator")
    if inner_public not in LINEAR_CLASSIFIERS:
        inner_public = "sklearn.linear_model.LogisticRegression"
    inner_hint = {"params": hint.get("estimator_params") or {}}
    estimators = []
    for row in range(weight.shape[0]):
        row_bias = None if bias is None else bias[row : row + 1].copy()
        est = _linear_clf(inner_public, weight[row : row + 1].copy(), row_bias, np.array([0, 1]), inner_hint)
        est.n_features_in_ = weight.shape[1]
        estimators.append(est)
    ovr = multiclass.OneVsRestClassifier(_make(inner_public, inner_hint))
    binarizer = preprocessing.LabelBinarizer(sparse_output=True)
    if multilabel:
        binarizer.fit(np.vstack([np.eye(len(labels), dtype=int), np.zeros((1, len(labels)), int)]))
    else:
        binarizer.fit(labels)
    ovr.label_binarizer_ = binarizer
    ovr.classes_ = binarizer.classes_ if multilabel else labels
    ovr.estimators_ = estimators
    return ovr


def _mlp(
    units: list[Any],
    archive: Archive,
    hint: dict[str, Any],
    classes: list[Any] | None,
    classifier: bool,
    role: str | None,
) -> Any:
    hidden_names = set()
    for unit in units[:-1]:
        if unit.binary_proba or len(unit.acts) > 1 or (unit.acts and unit.names[0] not in _MLP_NAMES):
            raise _refuse(
                unit,
                f"hidden activation {' then '.join(unit.names)} is not one scikit-learn's MLPs "
                "offer (relu, tanh, logistic, identity)",
            )
        hidden_names.add(unit.names[0] if unit.acts else "linear")
    if len(hidden_names) > 1:
        described = ", ".join(f"{u.dense.name}: {u.names[0] if u.acts else 'linear'}" for u in units[:-1])
        raise _refuse(
            units[-2],
            f"scikit-learn MLPs share one hidden activation; these layers mix them ({described})",
        )
    activation = _MLP_NAMES[hidden_names.pop()]
    arrays = [_dense_arrays(unit.dense, archive) for unit in units]
    coefs = [np.ascontiguousarray(w.T) for w, _ in arrays]
    intercepts = [np.zeros(w.shape[0], w.dtype) if b is None else b for w, b in arrays]
    out = units[-1]
    k = out.dense.units
    sizes = tuple(int(c.shape[1]) for c in coefs[:-1])
    if not classifier:
        if out.acts or out.binary_proba:
            raise _refuse(
                out,
                f"MLPRegressor's output has no activation, this layer applies "
                f"{', '.join(out.names)}; pass classes= if the model is a classifier",
            )
        est = _make("sklearn.neural_network.MLPRegressor", hint, hidden_layer_sizes=sizes, activation=activation)
        out_activation = "identity"
        binarizer = None
    else:
        if role == "decision_function":
            raise _refuse(out, "MLPClassifier has no decision_function; read the model with its probabilities")
        preprocessing = require("sklearn.preprocessing", purpose="building scikit-learn estimators")
        names = out.names
        if names == ["softmax"] and out.acts[0].axis in (-1, 1) and k == 2:
            w, b = _fold_two_way_softmax(coefs[-1].T, intercepts[-1])
            coefs[-1], intercepts[-1] = np.ascontiguousarray(w.T), b
            labels, out_activation = _labels(classes, 2, out), "logistic"
            binarizer = preprocessing.LabelBinarizer().fit(labels)
        elif names == ["softmax"] and out.acts[0].axis in (-1, 1):
            labels, out_activation = _labels(classes, k, out), "softmax"
            binarizer = preprocessing.LabelBinarizer().fit(labels)
        elif names == ["sigmoid"] and k == 1:
            labels, out_activation = _labels(classes, 2, out), "logistic"
            binarizer = preprocessing.LabelBinarizer().fit(labels)
        elif names == ["sigmoid"] and not out.binary_proba:
            out_activation = "logistic"
            binarizer = preprocessing.LabelBinarizer().fit(
                np.vstack([np.eye(k, dtype=int), np.zeros((1, k), int)])
            )
            labels = binarizer.classes_
        else:
            raise _refuse(
                out,
                f"no MLPClassifier output computes {' then '.join(names) or 'plain scores'}; "
                "it ends in softmax, or sigmoid (binary / multilabel)",
            )
        est = _make("sklearn.neural_network.MLPClassifier", hint, hidden_layer_sizes=sizes, activation=activation)
        est.classes_ = labels
        est._label_binarizer = binarizer
    est.coefs_ = coefs
    est.intercepts_ = intercepts
    est.n_layers_ = len(coefs) + 1
    est.n_outputs_ = int(coefs[-1].shape[1])
    est.out_activation_ = out_activation
    est.n_iter_ = 0
    est.t_ = 0
    est.loss_ = math.nan
    est.best_loss_ = None
    est.loss_curve_ = []
    return est


def estimator_class(public: str) -> type:
    """Import ``sklearn.x.Name`` by its public name (for tests and docs)."""
    module, name = public.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)
