"""The numpy reference runtime: a model's outputs computed from the archive alone.

It is the third witness in verification, so it favours being obviously right over being fast:
every layer is a few lines of numpy following docs/conventions.md, evaluated in float64 so its
own rounding is far below the frameworks' float32 rounding. ``run`` returns the outputs in the
model's own floating dtype (what the frameworks return); ``forward`` keeps float64 and every
intermediate value, for verification and for explaining a forward pass step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from weightio.activations import apply_activation
from weightio.archive import Archive
from weightio.dtypes import FLOAT_DTYPE_NAMES, numpy_dtype
from weightio.errors import InvalidInputError, UnsupportedLayerError, WeightsOnlyArchiveError
from weightio.registry import Registry
from weightio.spec import (
    ActivationLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    LayerBase,
    ModelSpec,
    OpaqueLayer,
)

LayerFn = Callable[[LayerBase, Mapping[str, np.ndarray], list[np.ndarray]], np.ndarray]

RUNTIME: Registry[LayerFn] = Registry("numpy", "run")

InputLike = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


@RUNTIME.register("dense")
def _dense(layer: DenseLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    y = xs[0] @ params["weight"].T
    if "bias" in params:
        y = y + params["bias"]
    return apply_activation(layer.activation, y)


@RUNTIME.register("activation")
def _activation(
    layer: ActivationLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    return apply_activation(layer.activation, xs[0])


@RUNTIME.register("dropout", "identity")
def _identity(
    layer: DropoutLayer | IdentityLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    return xs[0]


@RUNTIME.register("affine")
def _affine(layer: LayerBase, params: Mapping[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    return xs[0] * params["scale"] + params["offset"]


@RUNTIME.register("binary_proba")
def _binary_proba(
    layer: LayerBase, params: Mapping[str, np.ndarray], xs: list[np.ndarray]
) -> np.ndarray:
    p = xs[0]
    if p.shape[-1] != 1:
        raise InvalidInputError(
            f"binary_proba layer {layer.name!r} needs one probability column, got shape "
            f"{tuple(p.shape)}"
        )
    return np.concatenate([1.0 - p, p], axis=-1)


@RUNTIME.register("opaque")
def _opaque(layer: OpaqueLayer, params: Mapping[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    why = f" ({layer.reason})" if layer.reason else ""
    raise UnsupportedLayerError(
        f"weightio does not know how to compute {layer.source_class or 'this layer'} "
        f"(kept as 'opaque'{why}); the archive can be inspected and diffed but not run",
        layer=layer.name,
    )


@dataclass
class Trace:
    """Every value of a forward pass, by layer or input name, in float64."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


def _as_float64(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "fc" or array.dtype.name in {"bfloat16"} or "float8" in array.dtype.name:
        return np.asarray(array, dtype=np.float64)
    return np.asarray(array)


def bind_inputs(spec: ModelSpec, x: InputLike) -> dict[str, np.ndarray]:
    """Match user inputs to the spec's inputs (one array, a list in order, or a dict by name)."""
    if isinstance(x, Mapping):
        missing = [inp.name for inp in spec.inputs if inp.name not in x]
        if missing:
            raise InvalidInputError(f"inputs missing: {', '.join(missing)}")
        arrays = [np.asarray(x[inp.name]) for inp in spec.inputs]
    elif isinstance(x, np.ndarray) or not isinstance(x, Sequence):
        arrays = [np.asarray(x)]
    else:
        arrays = [np.asarray(a) for a in x]
    if len(arrays) != len(spec.inputs):
        raise InvalidInputError(
            f"the model takes {len(spec.inputs)} input(s), got {len(arrays)}. "
            f"Inputs: {', '.join(i.name for i in spec.inputs)}"
        )
    bound = {}
    for inp, array in zip(spec.inputs, arrays):
        want = tuple(inp.shape)
        got = tuple(array.shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise InvalidInputError(
                f"input {inp.name!r} must have shape (batch, {', '.join(map(str, want))}); "
                f"received {tuple(array.shape)}"
            )
        bound[inp.name] = array
    return bound


def forward(archive: Archive, x: InputLike) -> tuple[list[np.ndarray], Trace]:
    """Run the model in float64; return the outputs and every intermediate value."""
    spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (read from a bare state dict), with no architecture "
            "to run; read the model itself (nn.Module / keras.Model) instead",
            file=archive.path,
        )
    trace = Trace()
    for name, array in bind_inputs(spec, x).items():
        trace.values[name] = _as_float64(array)
        trace.order.append(name)
    for index in spec.topological_order():
        layer = spec.layers[index]
        fn = RUNTIME.lookup(layer.kind, layer=layer.name)
        params = {
            param: _as_float64(archive.tensors[ref.key])
            for param, ref in layer.tensor_refs().items()
        }
        xs = [trace.values[source] for source in spec.layer_inputs(index)]
        trace.values[layer.name] = fn(layer, params, xs)
        trace.order.append(layer.name)
    return [trace.values[out.layer] for out in spec.outputs], trace


def output_dtype(spec: ModelSpec) -> np.dtype:
    """The floating dtype a framework running this model would return: its parameters' dtype."""
    for _, _, ref in spec.tensor_refs():
        if ref.dtype in FLOAT_DTYPE_NAMES:
            return numpy_dtype(ref.dtype)
    for inp in spec.inputs:
        if inp.dtype in FLOAT_DTYPE_NAMES:
            return numpy_dtype(inp.dtype)
    return np.dtype(np.float32)


def run(archive: Archive, x: InputLike) -> np.ndarray | list[np.ndarray]:
    """Compute the model's output(s) for ``x`` from the archive alone.

    Args:
        archive: A loaded or freshly read archive.
        x: One batch array for a single-input model, or a list (in input order) or a dict
            (by input name) for several.

    Returns:
        One array for a single-output model, else a list in output order; in the model's
        floating dtype (computed in float64).
    """
    outputs, _ = forward(archive, x)
    dtype = output_dtype(archive.spec)
    cast = [out.astype(dtype) if out.dtype.kind == "f" else out for out in outputs]
    return cast[0] if len(cast) == 1 else cast

# Family modules register their kinds into RUNTIME; imported last, once RUNTIME exists.
from weightio import runtime_conv  # noqa: E402,F401
from weightio import runtime_seq as _runtime_seq  # noqa: E402,F401  (registers the sequence kinds)
