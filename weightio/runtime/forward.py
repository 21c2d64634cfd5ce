"""The forward pass: a model's outputs (and every intermediate value) computed from the archive alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import (
    InvalidInputError,
    ResourceLimitError,
    WeightioError,
    WeightsOnlyArchiveError,
)
from weightio.format.archive import Archive
from weightio.runtime.base import RUNTIME, InputLike, as_float64
from weightio.runtime.native_layout import canonical_inputs, native_outputs
from weightio.spec.dtypes import FLOAT_DTYPE_NAMES, numpy_dtype
from weightio.spec.model import ModelSpec, size_problems


@dataclass
class Trace:
    """Every value of a forward pass, by layer or input name, in float64."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


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
    bound = bind_inputs(spec, x)
    # the spec's sizes were bounded when it was validated; free dimensions are known now
    batch = max((array.shape[0] for array in bound.values() if array.ndim), default=1)
    too_big = size_problems(spec, {name: tuple(a.shape[1:]) for name, a in bound.items()},
                            batch=batch)
    if too_big:
        raise ResourceLimitError("; ".join(too_big) + " for this input; nothing was computed",
                                 file=archive.path)
    for name, array in bound.items():
        trace.values[name] = as_float64(array)
        trace.order.append(name)
    for index in spec.topological_order():
        layer = spec.layers[index]
        fn = RUNTIME.lookup(layer.kind, layer=layer.name)
        params = {
            param: as_float64(archive.tensors[ref.key])
            for param, ref in layer.tensor_refs().items()
        }
        xs = [trace.values[source] for source in spec.layer_inputs(index)]
        trace.values[layer.name] = _compute(fn, layer, params, xs)
        trace.order.append(layer.name)
    return [trace.values[out.layer] for out in spec.outputs], trace


def _compute(fn: Any, layer: Any, params: dict[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    """One layer's output; numpy's own failure (a shape that does not fit) as a typed error.

    The spec checks every parameter against its layer's hyper-parameters, but a free input
    dimension is known only now: an input that does not fit a layer must be refused by name,
    not as numpy's anonymous ``ValueError`` from deep inside a matmul.
    """
    try:
        return fn(layer, params, xs)
    except WeightioError:
        raise
    except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in xs)
        raise InvalidInputError(
            f"{layer.kind} cannot compute on input(s) of shape {shapes} ({type(exc).__name__}: "
            f"{str(exc)[:300]})",
            layer=layer.name,
        ) from exc


def output_dtype(spec: ModelSpec) -> np.dtype:
    """The floating dtype a framework running this model would return: its parameters' dtype."""
    for _, _, ref in spec.tensor_refs():
        if ref.dtype in FLOAT_DTYPE_NAMES:
            return numpy_dtype(ref.dtype)
    for inp in spec.inputs:
        if inp.dtype in FLOAT_DTYPE_NAMES:
            return numpy_dtype(inp.dtype)
    return np.dtype(np.float32)


def run(
    archive: Archive, x: InputLike, *, layout: str = "canonical"
) -> np.ndarray | list[np.ndarray]:
    """Compute the model's output(s) for ``x`` from the archive alone.

    Args:
        archive: A loaded or freshly read archive.
        x: One batch array for a single-input model, or a list (in input order) or a dict
            (by input name) for several.
        layout: How feature maps in ``x`` and in the outputs are laid out: ``"canonical"``
            (channels-first, the default), ``"source"`` (the source framework's: channels-last
            for a model read from Keras), ``"channels_last"`` or ``"channels_first"``.

    Returns:
        One array for a single-output model, else a list in output order; in the model's
        floating dtype (computed in float64).
    """
    outputs, _ = forward(archive, canonical_inputs(archive.spec, x, layout))
    outputs = native_outputs(archive.spec, outputs, layout)
    dtype = output_dtype(archive.spec)
    cast = [out.astype(dtype) if out.dtype.kind == "f" else out for out in outputs]
    return cast[0] if len(cast) == 1 else cast
