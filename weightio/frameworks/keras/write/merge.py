"""Graph-operation spec kinds -> Keras merge layers and the ``GetItem`` operation, as data."""

from __future__ import annotations

from weightio.frameworks.keras.write.base import (
    INPUT,
    KERAS_WRITE,
    OPERATIONS_MODULE,
    KerasLayer,
    WriteContext,
)
from weightio.frameworks.keras.write.norm import channels_last_axis, feature_map_rank
from weightio.frameworks.keras.write.serialized import LAST_STEP_KEY, build_config, layer_config
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer

_MERGE_CLASS = {
    "add": "Add",
    "subtract": "Subtract",
    "multiply": "Multiply",
    "average": "Average",
    "maximum": "Maximum",
    "minimum": "Minimum",
}


@KERAS_WRITE.register(*_MERGE_CLASS)
def _merge(layer: MergeLayer, ctx: WriteContext) -> list[KerasLayer]:
    """The Keras merge layer of the same name, called on the list of inputs."""
    config = layer_config(ctx.name_of(layer), ctx.dtype)
    return [KerasLayer(_MERGE_CLASS[layer.kind], config, ctx.shape, build=build_config(*ctx.shapes), call="list")]


@KERAS_WRITE.register("concatenate")
def _concatenate(layer: ConcatenateLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Concatenate(axis); on feature maps the canonical axis moves to channels-last (1 -> -1)."""
    axis = layer.axis
    if ctx.layout == "channels":
        axis = channels_last_axis(layer, feature_map_rank(layer, ctx))
    config = layer_config(ctx.name_of(layer), ctx.dtype, axis=axis)
    out = list(ctx.shape)
    index = axis - 1 if axis > 0 else axis  # Keras counts the batch axis, shapes here do not
    joined = [s[index] for s in ctx.shapes]
    out[index] = None if any(n is None for n in joined) else sum(joined)  # type: ignore[arg-type]
    return [KerasLayer("Concatenate", config, tuple(out), build=build_config(*ctx.shapes), call="list")]


@KERAS_WRITE.register("last_step")
def _last_step(layer: LastStepLayer, ctx: WriteContext) -> list[KerasLayer]:
    """``x[:, -1]``: Keras records it as a built-in ``GetItem`` operation (safe to load)."""
    return [KerasLayer(
        "GetItem", {"name": ctx.name_of(layer)}, ctx.shape[1:], module=OPERATIONS_MODULE,
        registered_name="GetItem", call="args", call_args=[INPUT, LAST_STEP_KEY],
        output_dtype=ctx.dtype,
    )]
