"""``weightio.to_sklearn``: an archive -> a fitted scikit-learn estimator or Pipeline.

The archive must be a chain. It is cut into steps: leading ``affine`` layers become scalers,
then the dense layers (with their activations) become one model:

- one dense layer -> a linear model: ``LinearRegression`` (no output activation),
  ``LogisticRegression`` (sigmoid + ``[1-p, p]``, sigmoid, softmax, or a decision head),
  ``OneVsRestClassifier`` (log_sigmoid + softmax, i.e. OvR-normalised sigmoids; or sigmoids
  over several labels: multilabel);
- several dense layers sharing one hidden activation sklearn offers (relu, tanh, logistic,
  identity) -> ``MLPRegressor`` / ``MLPClassifier``.

What scikit-learn cannot express (mixed hidden activations, an activation it lacks, conv or
any other layer kind) is refused naming the layer. An archive read from scikit-learn carries a
hint (``spec.extra["sklearn"]``) so the same estimator classes, step names and parameters come
back (Ridge stays Ridge, a PCA step stays PCA). The estimators are built by setting their fitted
attributes directly (``coef_``, ``coefs_``, ``classes_`` …) in the archive's own dtype; nothing
is refitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError, UnsupportedSourceError, WeightsOnlyArchiveError
from weightio.format.archive import Archive
from weightio.optional import require
from weightio.registry import Registry
from weightio.spec.activations import ActivationFn

CheckFn = Callable[[Any], None]

#: Spec kind -> a check that the layer's settings are expressible in scikit-learn.
SKLEARN_WRITE: Registry[CheckFn] = Registry("sklearn", "write")

@SKLEARN_WRITE.register("affine")
def _check_affine(layer: Any) -> None:
    """A leading affine becomes a scaler."""


@SKLEARN_WRITE.register("dense")
def _check_dense(layer: Any) -> None:
    """A dense layer becomes (part of) a linear model or MLP, or a PCA step."""
    if layer.weight.dtype not in ("F16", "F32", "F64"):
        raise UnsupportedLayerError(
            f"dense weights are {layer.weight.dtype}; scikit-learn computes in float16/32/64",
            layer=layer.name,
        )


@SKLEARN_WRITE.register("activation")
def _check_activation(layer: Any) -> None:
    """Activations scikit-learn has: relu, tanh, logistic, identity, softmax (output)."""


@SKLEARN_WRITE.register("binary_proba", "dropout", "identity")
def _check_passive(layer: Any) -> None:
    """``[1-p, p]`` is how sklearn's binary predict_proba ends; dropout/identity are dropped."""


@dataclass
class _Unit:
    """A dense layer with the activations applied after it (linear ones dropped)."""

    dense: Any
    acts: list[ActivationFn] = field(default_factory=list)
    binary_proba: bool = False

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.acts]


def _arr(archive: Archive, ref: Any) -> np.ndarray:
    """A writable, owned copy in the tensor's own dtype (sklearn may write in place)."""
    return np.array(archive.tensors[ref.key])


def _is_binary_proba_dense(layer: Any, archive: Archive) -> bool:
    """The frozen ``Dense/Linear(1, 2)`` that Keras and PyTorch use for ``[1 - p, p]``."""
    if layer.kind != "dense" or layer.units != 2 or layer.in_features != 1 or not layer.use_bias:
        return False
    if layer.activation.name != "linear":
        return False
    weight = _arr(archive, layer.weight).ravel()
    bias = _arr(archive, layer.bias)
    return bool(np.array_equal(weight, [-1.0, 1.0]) and np.array_equal(bias, [1.0, 0.0]))


def _units(layers: list[Any], archive: Archive) -> list[_Unit]:
    units: list[_Unit] = []
    for layer in layers:
        if layer.kind == "dense":
            after_sigmoid = bool(units) and units[-1].names == ["sigmoid"]
            if after_sigmoid and units[-1].dense.units == 1 and _is_binary_proba_dense(layer, archive):
                units[-1].binary_proba = True
                continue
            unit = _Unit(layer)
            if layer.activation.name != "linear":
                unit.acts.append(layer.activation)
            units.append(unit)
        elif layer.kind == "activation":
            if not units or units[-1].binary_proba:
                raise UnsupportedLayerError(
                    "scikit-learn has no model with an activation here (before any dense layer "
                    "or after the binary probability columns)",
                    layer=layer.name,
                )
            if layer.activation.name != "linear":
                units[-1].acts.append(layer.activation)
        elif layer.kind == "binary_proba":
            if not units or units[-1].names != ["sigmoid"] or units[-1].dense.units != 1:
                raise UnsupportedLayerError(
                    "[1 - p, p] must follow a one-unit dense layer with a sigmoid",
                    layer=layer.name,
                )
            units[-1].binary_proba = True
        else:
            raise UnsupportedLayerError(
                f"a {layer.kind} layer after the dense layers has no scikit-learn equivalent",
                layer=layer.name,
            )
    return units


def _hint(archive: Archive, layers: list[Any]) -> dict[str, Any] | None:
    """The sklearn hint, if its steps still describe exactly these layers."""
    hint = archive.spec.extra.get("sklearn")
    if not isinstance(hint, dict) or not isinstance(hint.get("steps"), list):
        return None
    named = [name for step in _computing(hint["steps"], archive) for name in step.get("layers", [])]
    if named != [layer.name for layer in layers]:
        return None
    return hint


def _computing(steps: list[Any], archive: Archive) -> list[Any]:
    """Hint steps minus those made only of dropped layers (an identity FunctionTransformer)."""
    dropped = {layer.name for layer in archive.spec.layers if layer.kind in ("dropout", "identity")}
    return [
        step for step in steps
        if not isinstance(step, dict) or not step.get("layers")
        or any(name not in dropped for name in step["layers"])
    ]


def _classes(archive: Archive, classes: Any) -> list[Any] | None:
    if classes is not None:
        return list(classes)
    labels = archive.spec.outputs[0].class_labels
    return None if labels is None else list(labels)


def to_sklearn(archive: Archive, *, classes: Any = None) -> Any:
    """Build a fitted scikit-learn estimator (or Pipeline) computing what ``archive`` describes.

    Args:
        archive: A chain archive: optional affine layers, then dense layers.
        classes: Class labels, making the result a classifier when the archive has none
            (e.g. a Keras model ending in softmax); default: the archive's ``class_labels``.

    Raises:
        UnsupportedLayerError: a layer scikit-learn cannot express, named.
        WeightsOnlyArchiveError: the archive has no architecture.
    """
    spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only and no architecture, so no estimator can be built",
            file=archive.path,
        )
    if not spec.is_chain:
        raise UnsupportedSourceError(
            "scikit-learn estimators are chains of steps; this archive's layers form a graph "
            "(several inputs, outputs or branches)",
            file=archive.path,
        )
    require("sklearn", purpose="building scikit-learn estimators")
    layers = [layer for layer in spec.layers if layer.kind not in ("dropout", "identity")]
    for layer in layers:
        SKLEARN_WRITE.lookup(
            layer.kind, layer=layer.name, hint=" (scikit-learn has no such layer)"
        )(layer)
    if not layers:
        raise UnsupportedSourceError("the archive has no layers that compute anything")
    hint = _hint(archive, layers)
    from weightio.frameworks.sklearn import estimators as build

    steps: list[tuple[str, Any]] = []
    hint_steps = _computing(hint["steps"], archive) if hint else []
    rest = list(layers)
    n_features = int(spec.inputs[0].shape[0] or 0)
    # Steps the hint names as transformers: scalers, and PCA on a dense layer.
    while rest:
        step_hint = hint_steps[0] if hint_steps else {}
        layer = rest[0]
        if layer.kind == "affine":
            steps.append(build.scaler(layer, archive, step_hint, n_features))
        elif layer.kind == "dense" and step_hint.get("class") == "sklearn.decomposition.PCA":
            steps.append(build.pca(layer, archive, step_hint, n_features))
            n_features = layer.units
        else:
            break
        rest.pop(0)
        if hint_steps:
            hint_steps.pop(0)
    if rest:
        units = _units(rest, archive)
        step_hint = hint_steps[0] if hint_steps else {}
        steps.append(
            build.model(
                units,
                archive,
                step_hint,
                classes=_classes(archive, classes),
                role=spec.outputs[0].role,
                output_ndim=int((hint or {}).get("output_ndim", 2)),
                n_features=n_features,
            )
        )
    if len(steps) == 1:
        return steps[0][1]
    pipeline = require("sklearn.pipeline", purpose="building scikit-learn Pipelines")
    names = _unique([name for name, _ in steps])
    return pipeline.Pipeline(list(zip(names, [est for _, est in steps])))


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        base, n = name, 1
        while name in seen or "__" in name:
            name = f"{base.replace('__', '_')}_{n}"
            n += 1
        seen.add(name)
        out.append(name)
    return out
