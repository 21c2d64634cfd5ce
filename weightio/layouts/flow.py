"""Which tensors in a spec are spatial feature maps, and how each framework holds them.

The spec computes in one layout: a spatial tensor is channels-first ``[N, C, *S]``. Keras holds
the same tensor channels-last ``[N, *S, C]``; every other ("plain") tensor — vectors, sequences
fed to Dense/LSTM — is held identically by both. So the only layout fact about a tensor is its
*tag*: ``"channels"`` or ``"plain"``. Tags are not stored; they follow from the spec:

- a model input is ``channels`` when ``InputSpec.layout`` is ``channels_last`` (the source held
  it channels-last: a Keras CNN) or ``channels_first`` (PyTorch); its ``shape`` is canonical;
- spatial kinds (conv, pool, padding, upsampling) produce ``channels``; ``global_pool`` does when
  ``keepdims``; ``flatten`` and ``dense`` produce ``plain``;
- ``reshape`` produces ``channels`` when its ``output_order`` is ``channels_last``;
- ``permute`` produces ``channels`` when some consumer needs a feature map;
- elementwise kinds (activation, dropout, identity, and any kind registered ``ELEMENTWISE``)
  keep their first input's tag; so do per-channel kinds (``PER_CHANNEL``: batch and group norm,
  whose ``axis`` is canonical, i.e. 1 on a feature map);
- elementwise merges (``MERGE_KINDS``: add, subtract…) and ``concatenate`` produce ``channels``
  when every input is a feature map (a residual block, joined branches), ``plain`` otherwise;
- any other kind produces ``plain``.

Writers use the tags to build each framework's idiomatic form (and insert an exact permute only
where a tensor is used in both forms); verification uses them to feed each side its own layout.
"""


from __future__ import annotations

from collections.abc import Callable

import numpy as np

from weightio.layouts.transforms import to_channels_first, to_channels_last
from weightio.spec.base import CHANNELS, PLAIN, LayerBase
from weightio.spec.layers import kinds_with
from weightio.spec.model import InputSpec, ModelSpec

#: Kinds that read a feature map and write one.
SPATIAL_KINDS = kinds_with("spatial")
#: Kinds that read a feature map (and write whatever their rule says).
NEEDS_CHANNELS = kinds_with("spatial", "spatial_reduce")
#: Kinds computing elementwise, layout-agnostic: the output keeps the tag.
ELEMENTWISE = kinds_with("elementwise")
#: Kinds computing per position along a canonical ``axis`` (1 = channels on a feature map): the
#: output keeps the tag. Not in ``ELEMENTWISE``: their parameters depend on the axis, so a
#: flatten's order cannot be folded through them into a following dense.
PER_CHANNEL = kinds_with("per_channel")
#: Elementwise kinds reading several same-shape inputs: a feature map when all inputs are.
MERGE_KINDS = kinds_with("merge")
#: Multi-input kinds producing a feature map when all inputs are (``concatenate``'s axis is
#: canonical, so 1 joins channels).
MAP_MERGE_KINDS = kinds_with("merge", "join")
#: Kinds through which a consumer's need for a feature map reaches the producer.
TAG_PRESERVING = kinds_with("elementwise", "per_channel", "merge", "join")

#: Frameworks and the layout in which they hold spatial tensors.
FRAMEWORK_LAYOUT = {"keras": "channels_last", "torch": "channels_first"}


def input_tag(inp: InputSpec) -> str:
    """``channels`` for an input the source held as a feature map."""
    return CHANNELS if inp.layout in ("channels_last", "channels_first") else PLAIN


def _own_tag(layer: LayerBase, tags: dict[str, str], sources: list[str]) -> str | None:
    return layer.output_form([tags.get(source, PLAIN) for source in sources])


def _consumers(spec: ModelSpec) -> dict[str, list[int]]:
    users: dict[str, list[int]] = {}
    for index in range(len(spec.layers)):
        for source in spec.layer_inputs(index):
            users.setdefault(source, []).append(index)
    return users


def needs_channels_downstream(spec: ModelSpec, name: str, users: dict | None = None) -> bool:
    """True when some consumer of ``name`` (through elementwise layers) reads a feature map.

    "Some", not "every": in Keras a tensor read by a convolution *is* a channels-last feature
    map, whoever else reads it, and the spec must agree with the Keras reader.
    """
    users = _consumers(spec) if users is None else users
    pending, seen = list(users.get(name, [])), set()
    while pending:
        index = pending.pop()
        if index in seen:
            continue
        seen.add(index)
        layer = spec.layers[index]
        if layer.kind in NEEDS_CHANNELS:
            return True
        if layer.kind in ELEMENTWISE or layer.kind in TAG_PRESERVING:
            pending.extend(users.get(layer.name, []))
    return False


def tensor_layouts(spec: ModelSpec) -> dict[str, str]:
    """The tag of every input and layer output, by name."""
    tags = {inp.name: input_tag(inp) for inp in spec.inputs}
    users = _consumers(spec)
    for index in spec.topological_order():
        layer = spec.layers[index]
        tag = _own_tag(layer, tags, spec.layer_inputs(index))
        if tag is None:
            tag = CHANNELS if needs_channels_downstream(spec, layer.name, users) else PLAIN
        tags[layer.name] = tag
    return tags


def mark_channel_inputs(spec: ModelSpec, layout: str) -> ModelSpec:
    """Set ``layout`` on every plain input that some consumer reads as a feature map.

    Used by readers whose source holds feature maps channels-first (PyTorch): the input shape is
    already canonical, only the tag is recorded.
    """
    users = _consumers(spec)
    changed = [
        inp.model_copy(update={"layout": layout})
        if inp.layout == "features_last" and needs_channels_downstream(spec, inp.name, users)
        else inp
        for inp in spec.inputs
    ]
    if changed == list(spec.inputs):
        return spec
    return spec.model_copy(update={"inputs": changed})


# -- feeding each side its own layout ---------------------------------------------------------

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


def runner_in_layout(spec: ModelSpec, runner: Runner, layout: str) -> Runner:
    """Wrap ``runner`` (canonical in, canonical out) for a model holding feature maps ``layout``.

    Inputs and outputs tagged ``channels`` are moved channels-last before and channels-first
    after when ``layout`` is ``channels_last``; otherwise ``runner`` is returned as is.
    """
    if layout != "channels_last":
        return runner
    tags = tensor_layouts(spec)
    in_channels = [tags[inp.name] == CHANNELS for inp in spec.inputs]
    out_channels = [tags[out.layer] == CHANNELS for out in spec.outputs]
    if not any(in_channels) and not any(out_channels):
        return runner

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        moved = [to_channels_last(x) if c else x for x, c in zip(xs, in_channels)]
        outs = runner(moved)
        return [to_channels_first(y) if c else y for y, c in zip(outs, out_channels)]

    return run


def layout_of(framework: str | None) -> str:
    """The layout a framework (or verification target name) holds feature maps in."""
    return "channels_last" if framework == "keras" else "channels_first"


# -- shapes and ranks -------------------------------------------------------------------------


def tensor_ranks(spec: ModelSpec) -> dict[str, int]:
    """The rank (with batch) of every tensor whose rank follows from the spec alone."""
    ranks = {inp.name: len(inp.shape) + 1 for inp in spec.inputs}
    for index in spec.topological_order():
        layer = spec.layers[index]
        rank = layer.output_rank([ranks.get(source) for source in spec.layer_inputs(index)])
        if rank is not None:
            ranks[layer.name] = rank
    return ranks


# -- folding a flatten's order into the dense after it ----------------------------------------


def _dense_after(spec: ModelSpec, name: str, users: dict[str, list[int]]) -> int | None:
    """The dense layer reached from ``name`` through single-use elementwise layers, if any."""
    outputs = {out.layer for out in spec.outputs}
    while True:
        if name in outputs or len(users.get(name, [])) != 1:
            return None
        index = users[name][0]
        layer = spec.layers[index]
        if layer.kind == "dense":
            return index
        axis = getattr(getattr(layer, "activation", None), "axis", None)
        if layer.kind not in ELEMENTWISE or axis is not None:
            return None
        name = layer.name


def refold_flatten(
    archive: object,
    natural: Callable[[LayerBase, str], str],
    shapes_of: Callable[[object], dict[str, tuple[int, ...]] | None],
) -> object:
    """Give every flatten the order ``natural(flatten, input_tag)`` of the target framework.

    The dense layer after it gets its weight columns permuted once (exact), so the target needs
    no runtime transpose. A flatten with no dense after it (or free input sizes) is left as is;
    the writer then inserts an explicit permute. ``shapes_of`` gives every tensor's shape for
    the archive's input size (``weightio.runtime.shapes.tensor_shapes``), or None when free.
    """
    from weightio.format.archive import Archive, tensor_ref
    from weightio.layouts.transforms import FLATTEN_ROWS_PERMUTED, dense_columns_for_flatten

    spec: ModelSpec = archive.spec  # type: ignore[attr-defined]
    tags = tensor_layouts(spec)
    users = _consumers(spec)
    layers = list(spec.layers)
    # As stored: an encoded (int8) weight has its columns permuted as integers (exact; its
    # scales run along the output axis), so a writer keeping it encoded still can.
    arrays = dict(archive.stored)  # type: ignore[attr-defined]
    shapes: dict[str, tuple[int, ...]] | None = None
    changed = False
    for index, layer in enumerate(spec.layers):
        if layer.kind != "flatten":
            continue
        source = spec.layer_inputs(index)[0]
        want = natural(layer, tags.get(source, PLAIN))
        current = layer.order
        if current == want:
            continue
        dense_index = _dense_after(spec, layer.name, users)
        if dense_index is None:
            continue
        if shapes is None:
            shapes = shapes_of(archive)
            if shapes is None:
                return archive
        fmap = shapes[source]
        dense = layers[dense_index]
        if len(fmap) >= 2:
            key = dense.weight.key  # type: ignore[attr-defined]
            arrays[key] = dense_columns_for_flatten(arrays[key], fmap, source=current, target=want)
            ref = dense.weight  # type: ignore[attr-defined]
            if ref.encoding is not None and ref.encoding.axis not in (None, 0):
                arrays[key] = dense_columns_for_flatten(archive.tensors[key], fmap,  # type: ignore[attr-defined]
                                                        source=current, target=want)
                for part in (ref.encoding.scale, ref.encoding.zero_point):  # scales along
                    if part is not None:  # the permuted axis: the weight is decoded instead
                        arrays.pop(part.key, None)
                ref = tensor_ref(key, arrays[key])
            else:
                ref = ref.model_copy(update={"digest": None, "sha256": None})
            layers[dense_index] = dense.model_copy(update={"weight": ref})
        layers[index] = layer.model_copy(update={"order": want})
        changed = True
    if not changed:
        return archive
    provenance = spec.provenance.model_copy(
        update={"transforms": [*spec.provenance.transforms, FLATTEN_ROWS_PERMUTED]}
    )
    new_spec = ModelSpec.model_validate(
        {**spec.model_dump(), "layers": [l.model_dump() for l in layers],
         "provenance": provenance.model_dump()}
    )
    return Archive(new_spec, arrays)


def unfolded_flattens(archive: object, natural: Callable[[LayerBase, str], str]) -> list[str]:
    """Flattens whose order still differs from ``natural`` (after ``refold_flatten``).

    ``load_into`` must refuse these: copying the dense weights as they are would silently
    compute on features in the wrong order.
    """
    spec: ModelSpec = archive.spec  # type: ignore[attr-defined]
    tags = tensor_layouts(spec)
    names = []
    for index, layer in enumerate(spec.layers):
        if layer.kind == "flatten":
            tag = tags.get(spec.layer_inputs(index)[0], PLAIN)
            if layer.order != natural(layer, tag) and tag == CHANNELS:
                names.append(layer.name)
    return names
