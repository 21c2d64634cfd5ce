"""The layout bridge: each layer gets its input in the form it needs, with exact permutes between.

Keras holds feature maps channels-last, the spec channels-first: a tensor read by a layer that
computes on plain data (or the reverse) goes through an exact ``Permute``, described as data
like every other layer the mappings emit.
"""

from __future__ import annotations

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.keras.write.base import (
    KERAS_WRITE,
    KerasLayer,
    WriteContext,
)
from weightio.frameworks.keras.write.serialized import Shape, build_config, layer_config
from weightio.frameworks.keras.write.shapes import permuted
from weightio.layouts.flow import (
    CHANNELS,
    PLAIN,
    refold_flatten,
    tensor_layouts,
    tensor_ranks,
)
from weightio.layouts.transforms import (
    channels_first_axes,
    channels_last_axes,
    shape_channels_last,
)
from weightio.runtime.shapes import tensor_shapes
from weightio.spec.base import LayerBase
from weightio.spec.model import InputSpec, ModelSpec

# -- preparing the archive and the inputs -----------------------------------------------------


def prepare(archive: Archive) -> Archive:
    """Fold flatten orders into the following Dense so Keras's own Flatten is exact."""
    return refold_flatten(  # type: ignore[return-value]
        archive, lambda layer, tag: "channels_last" if tag == CHANNELS else "channels_first",
        tensor_shapes,
    )


def keras_input_shape(spec: ModelSpec, inp: InputSpec) -> tuple:
    """The Keras input shape: channels-last for a feature-map input."""
    if tensor_layouts(spec)[inp.name] == CHANNELS and len(inp.shape) >= 2:
        return shape_channels_last(tuple(inp.shape))
    return tuple(inp.shape)


# -- the bridge -------------------------------------------------------------------------------


#: Layout traits whose Keras mappings read a channels-last feature map.
_READ_MAPS = ("spatial", "spatial_reduce")
#: Layout traits whose Keras mappings take either form and place their axes by ``ctx.layout``.
_EITHER = ("flatten", "reshape", "permute", "per_channel")


def _needs(layer: LayerBase) -> str | None:
    """The form a layer's mapping needs its input in; None when it takes either.

    From the kind's layout trait: spatial kinds read Keras's channels-last maps; per-channel
    and reshaping kinds, and elementwise ones without an axis, take either and place their axes;
    every other kind computes on the canonical form, so a feature map reaches it channels-first
    (one exact ``Permute``) and its canonical axes hold as they are.
    """
    if layer.layout in _READ_MAPS:
        return CHANNELS
    if layer.layout in _EITHER:
        return None
    axis = getattr(getattr(layer, "activation", None), "axis", None)
    if layer.layout == "elementwise" and axis is None:
        return None
    return PLAIN


def _natural(layer: LayerBase, tag_in: str, wanted: str) -> str:
    """The form a mapping leaves its output in: the kind's own rule (a permute: what is wanted)."""
    form = layer.output_form([tag_in])
    return wanted if form is None else form


def permute_layer(name: str, dtype: str, dims: tuple[int, ...], shape: Shape) -> KerasLayer:
    """``Permute(dims)`` of a tensor of Keras shape ``shape`` (``dims`` count from 1)."""
    config = layer_config(name, dtype, dims=list(dims))
    return KerasLayer("Permute", config, permuted(shape, dims), build=build_config(shape))


def move_layout(
    ctx: WriteContext, have: str, want: str, ndim: int | None, base: str, shape: Shape
) -> list[KerasLayer]:
    """An exact Permute taking a tensor of rank ``ndim`` and Keras shape ``shape`` from form
    ``have`` to ``want`` (none if equal).
    """
    if have == want:
        return []
    if ndim is None or ndim < 3:
        if ndim is not None:
            return []  # a vector is the same in both forms
        raise UnsupportedLayerError(
            "cannot tell the rank of the tensor to move between channels-last and "
            "channels-first", layer=base,
        )
    axes = channels_last_axes(ndim) if want == CHANNELS else channels_first_axes(ndim)
    return [permute_layer(ctx.names.fresh(f"{base}_permute"), ctx.dtype, axes[1:], shape)]


def input_form(layer: LayerBase, have: str) -> str:
    """The form ``layer``'s mapping sees its input in, the bridge having moved it if needed."""
    need = _needs(layer)
    return have if need is None else need


def write_layer(layer: LayerBase, ctx: WriteContext, source: str) -> list[KerasLayer]:
    """The Keras layers computing ``layer``, with exact permutes where forms differ."""
    spec = ctx.archive.spec
    tags = spec_tags(spec)
    ranks = spec_ranks(spec)
    have = tags.get(source, PLAIN)
    need = input_form(layer, have)
    built: list[KerasLayer] = []
    if need != have:
        built += move_layout(ctx, have, need, ranks.get(source), layer.name, ctx.shape)
        if built:
            ctx.shapes = [built[-1].output_shape]
        have = need
    ctx.layout = have
    built += KERAS_WRITE.lookup(layer.kind, layer=layer.name)(layer, ctx)
    wanted = tags.get(layer.name, PLAIN)
    natural = _natural(layer, have, wanted)
    built += move_layout(ctx, natural, wanted, ranks.get(layer.name), layer.name, built[-1].output_shape)
    return built


_CACHE: dict[int, tuple[ModelSpec, dict[str, str], dict[str, int]]] = {}


def _analysis(spec: ModelSpec) -> tuple[dict[str, str], dict[str, int]]:
    cached = _CACHE.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = (spec, tensor_layouts(spec), tensor_ranks(spec))
        _CACHE.clear()
        _CACHE[id(spec)] = cached
    return cached[1], cached[2]


def spec_tags(spec: ModelSpec) -> dict[str, str]:
    """Every tensor's layout tag, computed once per spec."""
    return _analysis(spec)[0]


def spec_ranks(spec: ModelSpec) -> dict[str, int]:
    """Every tensor's rank where the spec fixes it, computed once per spec."""
    return _analysis(spec)[1]
