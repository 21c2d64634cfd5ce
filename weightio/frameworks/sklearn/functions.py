"""scikit-learn ``FunctionTransformer`` steps: the identity is read, any function is refused by name.

A ``FunctionTransformer(func=f)`` computes ``f(X)`` for an arbitrary Python callable. An archive
holds weights, not code, so weightio cannot store ``f``, and running it (to verify a conversion)
would execute code that came with the model file. Only ``func=None`` -- scikit-learn's identity --
has an exact mapping (an ``identity`` layer). Even well-known numpy functions (``np.log1p``) are
refused: the spec has no such activation, and guessing "this is probably numpy's" from a name
would be the kind of silent change weightio promises never to make.

The function is never called here; it is only described (module and qualified name, read as
attributes, never imported), so the refusal can say what to do.
"""

from __future__ import annotations

from typing import Any

from weightio.errors import UnsupportedLayerError
from weightio.spec.core import IdentityLayer

__all__ = ["FUNCTION_TRANSFORMER", "describe_function", "read_function_transformer"]

FUNCTION_TRANSFORMER = "sklearn.preprocessing.FunctionTransformer"


def describe_function(func: Any) -> str:
    """``numpy.log1p``, ``mymodule.scale``, ``a lambda defined in __main__`` ... never calls it."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(qualname, str):
        return f"a callable {type(func).__module__}.{type(func).__qualname__} object"
    if qualname.split(".")[-1] == "<lambda>":
        return f"a lambda defined in {module or 'an unknown module'}"
    return f"{module}.{qualname}" if isinstance(module, str) and module else qualname


def read_function_transformer(estimator: Any, name: str, ctx: Any, is_last: bool) -> Any:
    """``func=None`` becomes an ``identity`` layer; any function is refused, naming the step.

    Raises:
        UnsupportedLayerError: the step wraps a Python function (named), with what to do.
    """
    from weightio.frameworks.sklearn.read import StepResult, public_name

    func = getattr(estimator, "func", None)
    if func is None:
        layer = IdentityLayer(name=name)
        hint = {"class": public_name(estimator), "params": {}, "layers": [layer.name]}
        if is_last:
            return StepResult([layer], role="transform", hint=hint)
        return StepResult([layer], hint=hint)
    raise UnsupportedLayerError(
        f"Pipeline step {name!r} is a {FUNCTION_TRANSFORMER} calling {describe_function(func)}; "
        "weightio archives weights, not Python code, so it can neither store nor run that "
        "function (only FunctionTransformer() with func=None, the identity, is read). Apply the "
        "function to your data yourself and read the rest of the Pipeline (e.g. "
        "weightio.read(pipeline[1:]) when it is the first step), or replace the step with a "
        "transformer weightio reads (StandardScaler, MinMaxScaler, MaxAbsScaler, PCA)",
        layer=name,
    )
