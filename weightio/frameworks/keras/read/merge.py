"""Keras merge layers and slicing -> spec graph operations."""

from __future__ import annotations

from typing import Any

from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import NotExact, short
from weightio.frameworks.keras.read.base import (
    KERAS_READ,
    KerasLayerEntry,
    expect_weights,
    layer_fields,
)
from weightio.frameworks.keras.read.graph import node_shapes
from weightio.frameworks.keras.read.norm import canonical_axis, single_axis
from weightio.spec.base import LayerBase
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.ops import SliceLayer

# -- merges and slicing -------------------------------------------------------------------------

_MERGES = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Average": "average",
    "Maximum": "maximum",
    "Minimum": "minimum",
}


def _is_op(entry: KerasLayerEntry) -> bool:
    return (entry.module or "").startswith("keras.src.ops")


@KERAS_READ.register(*_MERGES, produces=tuple(_MERGES.values()))
def _merge(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Merge layers (``keras.layers.Add``…) and the same ops written ``x + y`` in a Functional."""
    expect_weights(entry, 0)
    if _is_op(entry) and entry.class_name == "Average":
        raise NotExact("keras.ops.average is a weighted mean over an axis, not the Average layer")
    if len(entry.inputs or []) < 2:
        raise NotExact(
            f"{entry.class_name} reads {len(entry.inputs or [])} tensor(s); weightio merges two "
            "or more layer outputs (a constant operand is not supported)"
        )
    return MergeLayer(**layer_fields(entry), kind=_MERGES[entry.class_name])  # type: ignore[arg-type]


def read_concatenate(entry: KerasLayerEntry, rank: int | None) -> ConcatenateLayer:
    """``Concatenate(axis)`` of tensors of ``rank`` (batch counted, None when unknown); on
    channels-last feature maps the axis becomes the canonical one (-1 -> 1).
    """
    expect_weights(entry, 0)
    axis = single_axis(entry.config.get("axis", -1), "Concatenate")
    if entry.input_tags and all(tag == "channels" for tag in entry.input_tags):
        axis = canonical_axis(axis, rank)
    return ConcatenateLayer(**layer_fields(entry), axis=axis)


@KERAS_READ.register("Concatenate", produces=("concatenate",))
def _concatenate(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Concatenate(axis)``; the axis counts the batch axis in both Keras and the spec."""
    shapes = [s for s in node_shapes(entry.raw) if s is not None]
    rank = len(shapes[0]) if shapes else None
    if rank is None:
        build = entry.raw.get("build_config") if entry.raw else None
        recorded = build.get("input_shape") if isinstance(build, dict) else None
        first = recorded[0] if isinstance(recorded, (list, tuple)) and recorded else None
        rank = len(first) if isinstance(first, (list, tuple)) else None
    return read_concatenate(entry, rank)


def _is_full_slice(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("class_name") == "__slice__"
        and all((value.get("config") or {}).get(k) is None for k in ("start", "stop", "step"))
    )


def _slice_config(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or value.get("class_name") != "__slice__":
        return None
    config = value.get("config") or {}
    bounds = [config.get(k) for k in ("start", "stop", "step")]
    if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
        return None
    if bounds[2] is not None and bounds[2] <= 0:
        return None
    return config


def _one_slice(entry: KerasLayerEntry, key: Any) -> LayerBase | None:
    """``x[:, a:b]`` (one axis after the batch sliced by constants, the rest whole) as a slice
    on the canonical axis: on a channels-last feature map Keras's last axis is the channels.
    """
    if not isinstance(key, (list, tuple)) or len(key) < 2:
        return None
    configs = [_slice_config(k) for k in key]
    if any(c is None for c in configs):
        return None
    cut = [i for i, k in enumerate(key) if not _is_full_slice(k)]
    if len(cut) != 1 or cut[0] == 0:
        return None
    axis, config = cut[0], configs[cut[0]]
    if entry.input_tags and entry.input_tags[0] == "channels":
        rank = _input_rank(entry)
        if rank is None:
            return None
        axis = 1 if axis == rank - 1 else axis + 1
    start, step = config.get("start"), config.get("step")
    return SliceLayer(**layer_fields(entry), axis=axis, start=0 if start is None else start,
                      stop=config.get("stop"), step=1 if step is None else step)


def _input_rank(entry: KerasLayerEntry) -> int | None:
    node = entry.raw.get("inbound_nodes") or [{}]
    args = node[0].get("args") if isinstance(node[0], dict) else None
    tensor = args[0] if isinstance(args, (list, tuple)) and args else None
    shape = (tensor or {}).get("config", {}).get("shape") if isinstance(tensor, dict) else None
    return len(shape) if isinstance(shape, (list, tuple)) else None


@KERAS_READ.register("GetItem", produces=("last_step", "slice"))
def _get_item(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``x[:, -1]`` / ``x[:, -1, :]`` in a Functional model: a sequence's last step; ``x[:, a:b]``
    a slice.
    """
    node = entry.raw.get("inbound_nodes") or [{}]
    args = node[0].get("args") if isinstance(node[0], dict) else None
    key = args[1] if isinstance(args, (list, tuple)) and len(args) == 2 else None
    if (
        isinstance(key, (list, tuple))
        and len(key) in (2, 3)
        and _is_full_slice(key[0])
        and key[1] == -1
        and all(_is_full_slice(k) for k in key[2:])
    ):
        return LastStepLayer(**layer_fields(entry))
    sliced = _one_slice(entry, key)
    if sliced is not None:
        return sliced
    raise NotExact(
        f"indexing with {short(key)}: weightio reads a sequence's last step, x[:, -1], and one "
        "axis sliced by constants, x[:, a:b]"
    )
