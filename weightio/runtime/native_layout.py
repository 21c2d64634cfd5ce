"""Inputs and outputs in a framework's own layout: channels-last feature maps for Keras.

The runtime computes in the canonical layout (feature maps channels-first, as PyTorch holds
them). A user holding a Keras model's input (``x_nhwc.npy``) should not have to transpose it
first: ``layout="source"`` takes and returns feature maps the way the source framework holds
them, and a wrong shape is refused naming the layout that was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from weightio.errors import InvalidInputError
from weightio.layouts.flow import FRAMEWORK_LAYOUT, tensor_layouts
from weightio.layouts.transforms import shape_channels_last, to_channels_first, to_channels_last
from weightio.runtime.base import InputLike
from weightio.spec.base import CHANNELS
from weightio.spec.model import ModelSpec

#: What ``layout=`` takes: the canonical layout, the source framework's, or one by name.
LayoutChoice = Literal["canonical", "source", "channels_first", "channels_last"]
LAYOUT_CHOICES: tuple[str, ...] = ("canonical", "source", "channels_first", "channels_last")


def resolve_layout(spec: ModelSpec, layout: str) -> str:
    """``channels_first`` or ``channels_last`` for a ``layout=`` choice."""
    if layout not in LAYOUT_CHOICES:
        raise InvalidInputError(
            f"layout must be one of {', '.join(LAYOUT_CHOICES)}. Received: layout={layout!r}"
        )
    if layout == "source":
        return FRAMEWORK_LAYOUT.get(spec.provenance.source_framework, "channels_first")
    return "channels_first" if layout == "canonical" else layout


def canonical_inputs(spec: ModelSpec, x: InputLike, layout: str) -> InputLike:
    """``x`` with every feature-map input moved channels-first; a sample without its batch axis
    (as ``explain`` takes) is moved the same way.

    Raises:
        InvalidInputError: an input's shape does not fit the model in ``layout`` (the message
            names the layout and the shape it expected).
    """
    held = resolve_layout(spec, layout)
    if held == "channels_first":
        return x
    tags = tensor_layouts(spec)
    if isinstance(x, Mapping):
        arrays = {name: np.asarray(value) for name, value in x.items()}
    elif isinstance(x, np.ndarray) or not isinstance(x, Sequence):
        arrays = {spec.inputs[0].name: np.asarray(x)} if spec.inputs else {}
    else:
        arrays = {inp.name: np.asarray(a) for inp, a in zip(spec.inputs, x)}
    moved = dict(arrays)
    for inp in spec.inputs:
        if tags.get(inp.name) != CHANNELS or inp.name not in arrays:
            continue
        array = arrays[inp.name]
        want = shape_channels_last(tuple(inp.shape))
        batched = array.ndim == len(want) + 1
        got = tuple(array.shape[1:] if batched else array.shape)
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = ", ".join("?" if w is None else str(w) for w in want)
            raise InvalidInputError(
                f"input {inp.name!r} must have shape (batch, {shown}) in the {held} layout "
                f"({layout}); received {tuple(array.shape)}. Pass layout='canonical' (CLI: "
                "--layout canonical) for channels-first input"
            )
        moved[inp.name] = to_channels_first(array if batched else array[None])
        if not batched:
            moved[inp.name] = moved[inp.name][0]
    if isinstance(x, Mapping):
        return moved
    ordered = [moved[inp.name] for inp in spec.inputs if inp.name in moved]
    return ordered[0] if isinstance(x, np.ndarray) or not isinstance(x, Sequence) else ordered


def native_outputs(spec: ModelSpec, outputs: list[np.ndarray], layout: str) -> list[np.ndarray]:
    """The model's outputs with feature maps moved into ``layout`` (channels-last for Keras)."""
    if resolve_layout(spec, layout) == "channels_first":
        return outputs
    tags = tensor_layouts(spec)
    return [to_channels_last(y) if tags.get(out.layer) == CHANNELS else y
            for out, y in zip(spec.outputs, outputs)]
