"""scikit-learn facade: read fitted estimators and Pipelines, run them, build them back.

``read_sklearn_estimator`` walks a Pipeline step by step through ``sklearn_read.SKLEARN_READ``;
``run_sklearn`` calls the estimator's own method for the archive's head, so conversions are
verified against scikit-learn itself; ``to_sklearn`` lives in ``sklearn_write``; files in
``sklearn_files``. scikit-learn is imported lazily, only to check an estimator is fitted.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError, UnsupportedSourceError
from weightio.format.archive import Archive
from weightio.format.provenance import provenance
from weightio.frameworks.common import make_archive
from weightio.frameworks.sklearn.functions import FUNCTION_TRANSFORMER, read_function_transformer
from weightio.frameworks.sklearn.read import (
    HEADS,
    SKLEARN_READ,
    ReadContext,
    StepResult,
    public_name,
    supported_estimators,
)
from weightio.optional import require

__all__ = [
    "read_sklearn_estimator",
    "run_sklearn",
    "supported_estimators",
]

_PIPELINE = "sklearn.pipeline.Pipeline"


def _snake(name: str) -> str:
    """``MLPClassifier`` -> ``mlp_classifier``, ``LinearSVC`` -> ``linear_svc``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _layer_name(step: str) -> str:
    """A spec-valid layer name from a Pipeline step name (no slashes, no leading space)."""
    cleaned = re.sub(r"[/\\]", "_", step).strip() or "step"
    return cleaned[:200]


def _check_fitted(estimator: Any, label: str, *, layer: str | None = None) -> None:
    sklearn_validation = require("sklearn.utils.validation", purpose="reading scikit-learn models")
    exceptions = require("sklearn.exceptions", purpose="reading scikit-learn models")
    try:
        sklearn_validation.check_is_fitted(estimator)
    except exceptions.NotFittedError:
        raise UnsupportedSourceError(
            f"{label} is not fitted, so it has no weights to read; fit it (estimator.fit(X, y), "
            "or the whole Pipeline) before reading it, or read the fitted model you saved",
            layer=layer,
        ) from None


def _check_pipeline_fitted(pipeline: Any) -> None:
    """Name the first unfitted step: sklearn's own check looks at the last step only."""
    for step_name, step in _steps(pipeline):
        if public_name(step) == FUNCTION_TRANSFORMER:
            continue  # stateless; judged by its function in sklearn_functions
        _check_fitted(step, f"Pipeline step {step_name!r} ({public_name(step)})", layer=step_name)
    _check_fitted(pipeline, "the Pipeline")


def _steps(estimator: Any) -> list[tuple[str, Any]]:
    """``(layer name, estimator)`` for each step that computes something."""
    if public_name(estimator) != _PIPELINE:
        return [(_snake(type(estimator).__name__), estimator)]
    steps = [
        (_layer_name(name), step)
        for name, step in estimator.steps
        if step is not None and not (isinstance(step, str) and step == "passthrough")
    ]
    if not steps:
        raise UnsupportedSourceError("the Pipeline has no steps that compute anything")
    return steps


def _read_step(estimator: Any, name: str, ctx: ReadContext, is_last: bool) -> StepResult:
    key = public_name(estimator)
    if key == FUNCTION_TRANSFORMER:  # before the registry: its message names the function
        return read_function_transformer(estimator, name, ctx, is_last)
    reader = SKLEARN_READ.get(key)
    if reader is None or not key.startswith("sklearn."):
        raise UnsupportedLayerError(
            f"weightio cannot read {key} (step {name!r}); it reads: "
            f"{', '.join(n.rsplit('.', 1)[1] for n in supported_estimators())} and Pipelines "
            "of them",
            layer=name,
        )
    _check_fitted(estimator, f"{key} (step {name!r})", layer=name)
    result = reader(estimator, name, ctx, is_last)
    if not is_last and result.role != "transform":
        raise UnsupportedLayerError(
            f"{key} is a predictor but is not the last step of the Pipeline", layer=name
        )
    return result


def read_sklearn_estimator(
    estimator: Any,
    *,
    head: str | None = None,
    dtype: Any = None,
    name: str | None = None,
    source_file: Any = None,
) -> Archive:
    """Read a fitted estimator or Pipeline into an archive.

    Args:
        estimator: A fitted estimator weightio maps, or a Pipeline of them.
        head: Which method the archive's output reproduces: ``"predict_proba"`` (default for
            classifiers that have it), ``"decision_function"``, ``"predict"`` (regressors) or
            ``"transform"`` (a Pipeline of transformers).
        dtype: Store the parameters in this float dtype (e.g. ``"float32"``) instead of
            scikit-learn's own (float64); recorded in provenance.
        name: The archive's name (default: the estimator's class name).
        source_file: The file it was loaded from, for provenance (name and sha256 only).

    Raises:
        UnsupportedLayerError: a step weightio cannot read, named, with the supported list.
        UnsupportedSourceError: an unfitted estimator, or a head it does not have.
    """
    if head is not None and head not in HEADS:
        raise UnsupportedSourceError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    sklearn = require("sklearn", purpose="reading scikit-learn models")
    if public_name(estimator) == _PIPELINE:
        _check_pipeline_fitted(estimator)
    elif public_name(estimator) in SKLEARN_READ.keys():
        _check_fitted(estimator, f"the {public_name(estimator)}")
    ctx = ReadContext(head=head, dtype=None if dtype is None else np.dtype(dtype))
    steps = _steps(estimator)
    layers: list[Any] = []
    hints: list[dict[str, Any]] = []
    result: StepResult | None = None
    for index, (step_name, step) in enumerate(steps):
        is_last = index == len(steps) - 1
        step_ctx = ctx if is_last else ReadContext(ctx.tensors, None, ctx.dtype, ctx.transforms)
        result = _read_step(step, step_name, step_ctx, is_last)
        layers.extend(result.layers)
        hints.append({"name": step_name, **result.hint})
    assert result is not None
    refs = [ref for layer in layers for ref in layer.tensor_refs().values()]
    if not refs:
        raise UnsupportedSourceError("the Pipeline only passes its input through; it has no weights")
    first_ref = refs[0]
    spec = {
        "name": name or type(estimator).__name__,
        "provenance": provenance(
            "sklearn",
            framework_version=sklearn.__version__,
            source_class=public_name(estimator),
            source_file=source_file,
            transforms=ctx.transforms,
        ).model_dump(),
        "inputs": [
            {"name": "X", "shape": [int(_features_in(estimator, steps))], "dtype": first_ref.dtype}
        ],
        "layers": [layer.model_dump() for layer in layers],
        "outputs": [
            {
                "name": result.role,
                "layer": layers[-1].name,
                "class_labels": result.class_labels,
                "role": result.role,
            }
        ],
        "extra": {
            "sklearn": {
                "estimator": public_name(estimator),
                "steps": hints,
                "output_ndim": result.output_ndim,
            }
        },
    }
    return make_archive(spec, ctx.tensors.arrays)


def _features_in(estimator: Any, steps: list[tuple[str, Any]]) -> int:
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        count = steps[0][1].n_features_in_
    return int(count)


def run_sklearn(estimator: Any, inputs: list[np.ndarray], role: str) -> list[np.ndarray]:
    """Call the estimator's own method for ``role``; a 1-D result becomes one column."""
    method = getattr(estimator, role)
    out = np.asarray(method(inputs[0]))
    if out.ndim == 1:
        out = out[:, None]
    return [out]


def archive_role(archive: Archive) -> str:
    """The role of the archive's single output (``predict`` when unrecorded)."""
    return archive.spec.outputs[0].role or "predict"


def to_sklearn(archive: Archive, *, classes: Any = None) -> Any:
    """See ``weightio.to_sklearn``."""
    from weightio.frameworks.sklearn.write import to_sklearn as build

    return build(archive, classes=classes)


def runner_for(estimator: Any, archive: Archive) -> Any:
    """A runner calling the method that reproduces the archive's output.

    An archive without a recorded role (read from Keras or PyTorch) is compared through
    ``predict_proba`` for a classifier and ``predict`` otherwise.
    """
    role = archive.spec.outputs[0].role
    if role is None:
        base = require("sklearn.base", purpose="running scikit-learn estimators")
        role = "predict_proba" if base.is_classifier(estimator) else "predict"
    return lambda xs: run_sklearn(estimator, xs, role)
