"""Fitted scikit-learn estimators and Pipelines -> spec layers, one reader per estimator class.

Every reader turns the fitted attributes (``coef_``, ``intercept_``, ``coefs_``, ``mean_``,
``scale_``, ``components_`` …) into canonical layers; nothing is refitted or approximated
beyond what the canonical form needs (a scaler's ``(x - mean) / scale`` becomes
``x * (1 / scale) + (-mean / scale)``; docs/sklearn.md says exactly what is stored how).

A classifier's output is one *head*, chosen by ``head=``: ``predict_proba`` (the default where
the estimator has it: probabilities, both columns for a binary problem) or
``decision_function`` (the scores). A regressor's head is ``predict``, a transformer's
``transform``. The output records its role and the class labels.

Readers are keyed by the estimator's public class name (``sklearn.linear_model.Ridge``) and
match the exact class only: a user subclass may override ``predict``, so it is refused rather
than guessed at. This module needs numpy only; it reads attributes of an already-built object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError, UnsupportedSourceError
from weightio.frameworks.common import TensorCollector
from weightio.frameworks.sklearn.estimators import LINEAR_REGRESSORS
from weightio.registry import Registry
from weightio.spec.activations import ActivationFn
from weightio.spec.base import LayerBase
from weightio.spec.core import ActivationLayer, AffineLayer, BinaryProbaLayer, DenseLayer
from weightio.spec.tensors import TensorRef

#: sklearn MLP activation names -> spec activations (and back, in sklearn_write).
MLP_ACTIVATIONS: dict[str, ActivationFn] = {
    "identity": ActivationFn(name="linear"),
    "logistic": ActivationFn(name="sigmoid"),
    "tanh": ActivationFn(name="tanh"),
    "relu": ActivationFn(name="relu"),
    "softmax": ActivationFn(name="softmax", axis=-1),
}

HEADS = ("predict_proba", "decision_function", "predict", "transform")

#: The line recorded in provenance when an MLP's ``coefs_[i]`` is transposed.
MLP_COEFS_TRANSPOSED = "dense.weight: sklearn MLP coefs_[i] [in, out] transposed to [out, in]"


@dataclass
class ReadContext:
    """Where readers put tensors, and the user's choices (head, dtype)."""

    tensors: TensorCollector = field(default_factory=TensorCollector)
    head: str | None = None
    dtype: np.dtype | None = None
    transforms: list[str] = field(default_factory=list)

    def array(self, layer: str, param: str, value: Any) -> TensorRef:
        """Store ``value`` (cast to ``dtype=`` when the user asked for one)."""
        array = np.asarray(value)
        if array.dtype.kind != "f":
            raise UnsupportedLayerError(
                f"{param} has dtype {array.dtype}; weightio expects floating-point parameters",
                layer=layer,
            )
        if self.dtype is not None and array.dtype != self.dtype:
            self.transforms.append(f"sklearn parameters cast from {array.dtype} to {self.dtype}")
            array = array.astype(self.dtype)
        return self.tensors.add(layer, param, np.ascontiguousarray(array))


@dataclass
class StepResult:
    """What one estimator became: its layers and, for the last step, what its output means."""

    layers: list[LayerBase]
    role: str = "transform"
    class_labels: list[Any] | None = None
    output_ndim: int = 2
    hint: dict[str, Any] = field(default_factory=dict)


ReadFn = Callable[[Any, str, ReadContext, bool], StepResult]

#: Public estimator class name -> reader ``(estimator, layer name, ctx, is_last) -> StepResult``.
SKLEARN_READ: Registry[ReadFn] = Registry("sklearn", "read")


def public_name(obj: Any) -> str:
    """``sklearn.linear_model.Ridge`` for a Ridge: the class under its public package."""
    cls = type(obj)
    module = cls.__module__ or ""
    parts = module.split(".")
    if parts[0] == "sklearn" and len(parts) >= 2:
        module = ".".join(p for p in parts[:2])
    return f"{module}.{cls.__name__}"


def supported_estimators() -> list[str]:
    """Every estimator class the reader maps, by public name."""
    return sorted(SKLEARN_READ.keys())


def _labels(classes: Any) -> list[Any]:
    """``classes_`` as plain JSON-able Python values."""
    values = np.asarray(classes).tolist()
    return [v if not isinstance(v, float) or math.isfinite(v) else str(v) for v in values]


def _json_params(estimator: Any) -> dict[str, Any]:
    """The estimator's own (non-nested) parameters that are plain JSON, for round trips."""
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if value is None or isinstance(value, (bool, int, str)):
            params[key] = value
        elif isinstance(value, float) and math.isfinite(value):
            params[key] = value
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            params[key] = list(value)
    return params


def _hint(estimator: Any, layers: list[LayerBase]) -> dict[str, Any]:
    return {
        "class": public_name(estimator),
        "params": _json_params(estimator),
        "layers": [layer.name for layer in layers],
    }


def _choose_head(estimator: Any, name: str, ctx: ReadContext, offered: tuple[str, ...]) -> str:
    """The requested head if this estimator offers it, else its first (default) one."""
    if ctx.head is None:
        return offered[0]
    if ctx.head not in offered:
        raise UnsupportedSourceError(
            f"{public_name(estimator)} (step {name!r}) has no {ctx.head} output; "
            f"choose head= from: {', '.join(offered)}"
        )
    return ctx.head


def _dense(
    name: str,
    ctx: ReadContext,
    weight: np.ndarray,
    bias: np.ndarray | None,
    activation: ActivationFn,
    source: str,
) -> DenseLayer:
    weight = np.atleast_2d(np.asarray(weight))
    units, in_features = (int(d) for d in weight.shape)
    bias_ref = None
    if bias is not None:
        raw = np.asarray(bias)
        if raw.size not in (1, units) or (raw.size == 1 and raw.ndim > 1):
            raise UnsupportedLayerError(
                f"intercept has shape {list(raw.shape)}, expected [{units}]", layer=name
            )
        raw = np.broadcast_to(raw.reshape(-1), (units,))
        stored = raw.astype(weight.dtype)
        if not np.array_equal(stored, raw):
            raise UnsupportedLayerError(
                f"intercept_ ({raw.dtype}) cannot be stored in the coefficients' dtype "
                f"({weight.dtype}) without rounding",
                layer=name,
            )
        bias_ref = ctx.array(name, "bias", stored)
    weight_ref = ctx.array(name, "weight", weight)
    return DenseLayer(
        name=name,
        source_class=source,
        units=units,
        in_features=in_features,
        use_bias=bias_ref is not None,
        activation=activation,
        weight=weight_ref,
        bias=bias_ref,
    )


# -- linear regressors ----------------------------------------------------------------------


def _intercept(estimator: Any) -> np.ndarray | None:
    """``intercept_`` as an array, or None when the model was fitted without one."""
    if getattr(estimator, "fit_intercept", True) is False:
        return None
    return np.asarray(estimator.intercept_)


@SKLEARN_READ.register(
    *LINEAR_REGRESSORS,
    produces=("dense",),
)
def _linear_regressor(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``predict = X @ coef_.T + intercept_``: one dense layer holding exactly those arrays."""
    _choose_head(estimator, name, ctx, ("predict",))
    coef = np.asarray(estimator.coef_)
    layer = _dense(name, ctx, coef, _intercept(estimator), ActivationFn(), public_name(estimator))
    return StepResult([layer], role="predict", output_ndim=coef.ndim, hint=_hint(estimator, [layer]))


# -- linear classifiers ---------------------------------------------------------------------


def _has_ovr_proba(estimator: Any) -> bool:
    """SGDClassifier(loss='log_loss') gives OvR-normalised sigmoid probabilities."""
    return getattr(estimator, "loss", None) == "log_loss"


def _classifier_layers(
    name: str,
    ctx: ReadContext,
    weight: np.ndarray,
    bias: np.ndarray | None,
    head: str,
    *,
    proba: str,
    source: str,
) -> list[LayerBase]:
    """A linear classifier's layers for ``head``.

    ``proba`` is how the estimator turns scores into probabilities: ``"softmax"`` (multinomial
    logistic regression) or ``"ovr"`` (sigmoid per class, rows normalised to sum to one). A
    single score column (a binary problem) is sigmoid then ``[1 - p, p]`` either way.
    """
    weight = np.atleast_2d(weight)
    if head == "decision_function":
        return [_dense(name, ctx, weight, bias, ActivationFn(), source)]
    if weight.shape[0] == 1:
        dense = _dense(name, ctx, weight, bias, ActivationFn(name="sigmoid"), source)
        return [dense, BinaryProbaLayer(name=f"{name}_proba", source_class=source)]
    if proba == "softmax":
        return [_dense(name, ctx, weight, bias, ActivationFn(name="softmax", axis=-1), source)]
    # sigmoid(d) / sum(sigmoid(d)) == softmax(log_sigmoid(d)): standard layers everywhere.
    dense = _dense(name, ctx, weight, bias, ActivationFn(name="log_sigmoid"), source)
    norm = ActivationLayer(
        name=f"{name}_proba",
        source_class=source,
        activation=ActivationFn(name="softmax", axis=-1),
    )
    return [dense, norm]


@SKLEARN_READ.register(
    "sklearn.linear_model.LogisticRegression",
    "sklearn.linear_model.SGDClassifier",
    "sklearn.linear_model.RidgeClassifier",
    "sklearn.linear_model.Perceptron",
    "sklearn.svm.LinearSVC",
    produces=("dense", "activation", "binary_proba"),
)
def _linear_classifier(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``decision_function = X @ coef_.T + intercept_``; probabilities as the estimator makes them."""
    source = public_name(estimator)
    if source.endswith("LogisticRegression"):
        offered: tuple[str, ...] = ("predict_proba", "decision_function")
        proba = "softmax"
    elif source.endswith("SGDClassifier") and _has_ovr_proba(estimator):
        offered, proba = ("predict_proba", "decision_function"), "ovr"
    else:
        offered, proba = ("decision_function",), "none"
    head = _choose_head(estimator, name, ctx, offered)
    coef = np.asarray(estimator.coef_)
    layers = _classifier_layers(
        name, ctx, coef, _intercept(estimator), head, proba=proba, source=source
    )
    binary = coef.shape[0] == 1
    return StepResult(
        layers,
        role=head,
        class_labels=_labels(estimator.classes_),
        output_ndim=1 if binary and head == "decision_function" else 2,
        hint=_hint(estimator, layers),
    )


@SKLEARN_READ.register(
    "sklearn.multiclass.OneVsRestClassifier", produces=("dense", "activation", "binary_proba")
)
def _one_vs_rest(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """One binary linear classifier per class, stacked into one dense layer.

    Probabilities are each estimator's positive-class sigmoid, normalised over classes unless
    the problem is multilabel; a single estimator (two classes) gives ``[1 - p, p]``.
    """
    inner = estimator.estimators_
    kinds = {public_name(e) for e in inner}
    linear = {
        "sklearn.linear_model.LogisticRegression",
        "sklearn.linear_model.SGDClassifier",
        "sklearn.linear_model.RidgeClassifier",
        "sklearn.linear_model.Perceptron",
        "sklearn.svm.LinearSVC",
    }
    if not kinds <= linear or any(np.asarray(e.coef_).shape[0] != 1 for e in inner):
        raise UnsupportedLayerError(
            f"OneVsRestClassifier over {', '.join(sorted(kinds))}: weightio reads it over binary "
            f"linear classifiers only ({', '.join(sorted(linear))})",
            layer=name,
        )
    with_proba = all(
        public_name(e).endswith("LogisticRegression") or _has_ovr_proba(e) for e in inner
    )
    offered = ("predict_proba", "decision_function") if with_proba else ("decision_function",)
    head = _choose_head(estimator, name, ctx, offered)
    coef = np.concatenate([np.atleast_2d(e.coef_) for e in inner], axis=0)
    intercepts = [_intercept(e) for e in inner]
    if any(i is None for i in intercepts) and not all(i is None for i in intercepts):
        raise UnsupportedLayerError(
            "some of its estimators fit an intercept and some do not", layer=name
        )
    bias = None if intercepts[0] is None else np.concatenate([np.ravel(i) for i in intercepts])
    source = public_name(estimator)
    multilabel = bool(estimator.multilabel_)
    if head == "predict_proba" and multilabel:
        layers: list[LayerBase] = [
            _dense(name, ctx, coef, bias, ActivationFn(name="sigmoid"), source)
        ]
    else:
        layers = _classifier_layers(name, ctx, coef, bias, head, proba="ovr", source=source)
    hint = _hint(estimator, layers)
    hint["estimator"] = public_name(inner[0])
    hint["estimator_params"] = _json_params(inner[0])
    hint["multilabel"] = multilabel
    return StepResult(
        layers,
        role=head,
        class_labels=_labels(estimator.classes_),
        output_ndim=1 if len(inner) == 1 and head == "decision_function" else 2,
        hint=hint,
    )


# -- multi-layer perceptrons ----------------------------------------------------------------


def _mlp_layers(
    estimator: Any, name: str, ctx: ReadContext, output: ActivationFn
) -> list[DenseLayer]:
    hidden = MLP_ACTIVATIONS.get(estimator.activation)
    if hidden is None:
        raise UnsupportedLayerError(
            f"hidden activation {estimator.activation!r} is not one weightio maps", layer=name
        )
    source = public_name(estimator)
    count = len(estimator.coefs_)
    layers = []
    for i, (coef, intercept) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
        activation = output if i == count - 1 else hidden
        weight = np.asarray(coef).T  # sklearn stores [in, out]
        layers.append(_dense(f"{name}_{i}", ctx, weight, np.asarray(intercept), activation, source))
    ctx.transforms.append(MLP_COEFS_TRANSPOSED)
    return layers


@SKLEARN_READ.register("sklearn.neural_network.MLPRegressor", produces=("dense",))
def _mlp_regressor(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """Dense layers with the shared hidden activation, identity output: ``predict``."""
    _choose_head(estimator, name, ctx, ("predict",))
    layers = _mlp_layers(estimator, name, ctx, MLP_ACTIVATIONS[estimator.out_activation_])
    return StepResult(
        list(layers),
        role="predict",
        output_ndim=1 if estimator.n_outputs_ == 1 else 2,
        hint=_hint(estimator, layers),
    )


@SKLEARN_READ.register(
    "sklearn.neural_network.MLPClassifier", produces=("dense", "binary_proba")
)
def _mlp_classifier(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``predict_proba``: softmax (multiclass), sigmoid (multilabel), or sigmoid + ``[1-p, p]``.

    MLPClassifier has no ``decision_function``, so ``predict_proba`` is its only head.
    """
    _choose_head(estimator, name, ctx, ("predict_proba",))
    out = MLP_ACTIVATIONS[estimator.out_activation_]
    layers: list[LayerBase] = list(_mlp_layers(estimator, name, ctx, out))
    binary = estimator.n_outputs_ == 1
    if binary:
        layers.append(BinaryProbaLayer(name=f"{name}_proba", source_class=public_name(estimator)))
    hint = _hint(estimator, layers)
    multilabel = str(getattr(estimator._label_binarizer, "y_type_", "")).startswith("multilabel")
    hint["multilabel"] = multilabel
    return StepResult(
        layers, role="predict_proba", class_labels=_labels(estimator.classes_), hint=hint
    )


# -- transformers ---------------------------------------------------------------------------


def _affine(
    name: str, ctx: ReadContext, scale: np.ndarray, offset: np.ndarray, source: str
) -> AffineLayer:
    return AffineLayer(
        name=name,
        source_class=source,
        features=int(scale.shape[0]),
        scale=ctx.array(name, "scale", scale),
        offset=ctx.array(name, "offset", offset),
    )


def _transformer(estimator: Any, name: str, ctx: ReadContext, layers: list[LayerBase]) -> StepResult:
    _choose_head(estimator, name, ctx, ("transform",))
    return StepResult(layers, role="transform", hint=_hint(estimator, layers))


@SKLEARN_READ.register("sklearn.preprocessing.StandardScaler", produces=("affine",))
def _standard_scaler(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``(x - mean_) / scale_`` -> ``x * (1 / scale_) + (-mean_ / scale_)``."""
    n = int(estimator.n_features_in_)
    scale_ = np.ones(n) if estimator.scale_ is None else np.asarray(estimator.scale_)
    mean_ = np.zeros(n, scale_.dtype) if estimator.mean_ is None else np.asarray(estimator.mean_)
    layer = _affine(name, ctx, 1.0 / scale_, -mean_ / scale_, public_name(estimator))
    return _transformer(estimator, name, ctx, [layer])


@SKLEARN_READ.register("sklearn.preprocessing.MinMaxScaler", produces=("affine",))
def _min_max_scaler(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``x * scale_ + min_``: exactly the affine form, stored as is."""
    if estimator.clip:
        raise UnsupportedLayerError(
            "MinMaxScaler(clip=True) clips its output, which weightio has no layer for; "
            "refit it with clip=False",
            layer=name,
        )
    layer = _affine(
        name, ctx, np.asarray(estimator.scale_), np.asarray(estimator.min_), public_name(estimator)
    )
    return _transformer(estimator, name, ctx, [layer])


@SKLEARN_READ.register("sklearn.preprocessing.MaxAbsScaler", produces=("affine",))
def _max_abs_scaler(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``x / scale_`` -> ``x * (1 / scale_) + 0``."""
    scale_ = np.asarray(estimator.scale_)
    layer = _affine(name, ctx, 1.0 / scale_, np.zeros_like(scale_), public_name(estimator))
    return _transformer(estimator, name, ctx, [layer])


@SKLEARN_READ.register("sklearn.decomposition.PCA", produces=("dense",))
def _pca(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    """``(x - mean_) @ components_.T`` (``/ sqrt(explained_variance_)`` when whitened).

    A dense layer: weight ``components_`` (rows divided by the whitening scale, clamped at
    machine epsilon as scikit-learn does) and bias ``-weight @ mean_``.
    """
    components = np.asarray(estimator.components_)
    mean = np.asarray(estimator.mean_)
    weight = components
    if estimator.whiten:
        scale = np.sqrt(np.asarray(estimator.explained_variance_))
        scale = np.maximum(scale, np.finfo(scale.dtype).eps)
        weight = components / scale[:, None]
    layer = _dense(name, ctx, weight, -(weight @ mean), ActivationFn(), public_name(estimator))
    return _transformer(estimator, name, ctx, [layer])
