"""One model assembly: an archive -> the Keras model as data, for both back ends.

The result is what ``config.json`` holds (``Sequential`` for a chain, ``Functional`` otherwise,
wired with ``inbound_nodes``/``keras_history`` as Keras 3 serializes it) and every layer's arrays.
The live back end (``build.to_keras``) deserializes it with Keras and sets the arrays; the file
back end (``files.writer``) writes it and the arrays with h5py. Nothing here imports Keras.

A Functional model lists its layers in the order Keras itself computes from the graph
(``keras.src.ops.function.map_graph``: by depth from the outputs, ties by traversal order):
``model.layers`` of the loaded model follows that order, and ``model.weights.h5`` names each
layer's group by its position in it, so the file must list them the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from weightio.errors import UnsupportedLayerError, WeightsOnlyArchiveError
from weightio.format.archive import Archive
from weightio.frameworks.keras.write.base import (
    INPUT,
    KERAS_ANY,
    KERAS_FLOAT,
    KERAS_WRITE,
    KerasLayer,
    KerasSettings,
    NameAllocator,
    WriteContext,
)
from weightio.frameworks.keras.write.bridge import (
    keras_input_shape,
    move_layout,
    prepare,
    spec_ranks,
    spec_tags,
    write_layer,
)
from weightio.frameworks.keras.write.serialized import (
    Shape,
    batch_shape,
    keras_tensor,
    policy,
)
from weightio.frameworks.keras.write.sharing import calls_of, reused_layers, warn_untied
from weightio.layouts.flow import CHANNELS, MAP_MERGE_KINDS, PLAIN
from weightio.spec.base import LayerBase
from weightio.spec.layers import MULTI_INPUT_KINDS
from weightio.spec.model import InputSpec, ModelSpec


@dataclass
class KerasModelPlan:
    """A Keras model as data: its serialized form and the layers it lists, in order."""

    #: The model as ``keras.saving.serialize_keras_object`` gives it (``config.json``).
    config: dict[str, Any]
    #: Every entry of the model's ``layers`` (InputLayers and operations included), in order.
    layers: list[KerasLayer]
    sequential: bool

    @property
    def name(self) -> str:
        """The Keras model's name."""
        return str(self.config["config"]["name"])

    def saved_layers(self) -> Iterator[KerasLayer]:
        """The layers of ``model.layers``, whose variables ``model.weights.h5`` holds in order:
        a Sequential's InputLayer and a Functional's operations are not among them.
        """
        for layer in self.layers:
            if not layer.is_layer or (self.sequential and layer.class_name == "InputLayer"):
                continue
            yield layer


def _input_layer(spec: ModelSpec, inp: InputSpec, name: str) -> KerasLayer:
    shape = keras_input_shape(spec, inp)
    config = {
        "batch_shape": batch_shape(shape), "dtype": KERAS_ANY.get(inp.dtype, "float32"),
        "sparse": False, "ragged": False, "name": name, "optional": False,
    }
    return KerasLayer("InputLayer", config, shape)


def plan_keras_model(archive: Archive, settings: KerasSettings | None = None) -> KerasModelPlan:
    """The Keras model computing what ``archive`` describes, as data.

    ``settings`` are the global Keras settings the model will run under (the live Keras's, or
    Keras's defaults for a file).

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture.
        UnsupportedLayerError: naming the first layer with no exact Keras equivalent.
    """
    spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (a bare state dict) and no architecture, so no Keras "
            "model can be made from it; build the model in Keras and use load_into instead",
            file=archive.path,
        )
    archive = prepare(archive)
    spec = archive.spec
    names = NameAllocator()
    for inp in spec.inputs:
        names.reserve(inp.name)
    for layer in spec.layers:
        names.reserve(layer.name)
    model_name = NameAllocator.clean(spec.name)
    inputs = {inp.name: _input_layer(spec, inp, names.by_spec[inp.name]) for inp in spec.inputs}
    dtypes = {inp.name: KERAS_FLOAT.get(inp.dtype, "float32") for inp in spec.inputs}
    settings = settings or KerasSettings()
    if spec.is_chain and not calls_of(spec):  # a Sequential calls each layer once
        plan = _sequential(archive, names, inputs[spec.inputs[0].name], dtypes, model_name, settings)
        if not any(layer.needs_functional for layer in plan.layers):
            return plan
        names = NameAllocator()  # again from scratch, for the Functional model
        for inp in spec.inputs:
            names.reserve(inp.name)
        for layer in spec.layers:
            names.reserve(layer.name)
    return _functional(archive, names, inputs, dtypes, model_name, settings)


def _sequential(
    archive: Archive, names: NameAllocator, first: KerasLayer, dtypes: dict[str, str],
    model_name: str, settings: KerasSettings,
) -> KerasModelPlan:
    spec = archive.spec
    source = spec.inputs[0].name
    ctx = WriteContext(archive, dtypes[source], names, [first.output_shape], settings=settings)
    layers = [first]
    for layer in spec.layers:
        built = write_layer(layer, ctx, source)
        layers.extend(built)
        ctx.shapes = [built[-1].output_shape]
        source = layer.name
    shape = batch_shape(first.output_shape)
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": model_name, "trainable": True, "dtype": policy("float32"),
            "layers": [layer.serialized() for layer in layers], "build_input_shape": shape,
        },
        "registered_name": None,
        "build_config": {"input_shape": shape},
        "compile_config": {},
    }
    return KerasModelPlan(config, layers, sequential=True)


def _canonical_inputs(
    layer: LayerBase, archive: Archive, names: NameAllocator, sources: list[str],
    producers: list[KerasCall], dtype: str,
) -> list[KerasLayer | None]:
    """For a merge or concatenate of feature maps with plain tensors (shufflenet joins a
    channel-shuffled half, plain after its ``view``, to a convolution's output): an exact
    Permute taking each feature map channels-first, so every input holds the canonical layout
    and the merge computes on it (its output is plain, as ``layouts.flow`` tags it).
    """
    tags = spec_tags(archive.spec)
    forms = [tags.get(s, PLAIN) for s in sources]
    if layer.kind not in MAP_MERGE_KINDS or CHANNELS not in forms or PLAIN not in forms:
        return [None] * len(sources)
    ranks = spec_ranks(archive.spec)
    moved: list[KerasLayer | None] = []
    for source, form, producer in zip(sources, forms, producers):
        if form != CHANNELS:
            moved.append(None)
            continue
        ctx = WriteContext(archive, dtype, names, [producer.output_shape])
        permute = move_layout(ctx, CHANNELS, PLAIN, ranks.get(source), layer.name, producer.output_shape)
        moved.append(permute[0] if permute else None)
    return moved


def _write_merge(layer: LayerBase, ctx: WriteContext, sources: list[str]) -> list[KerasLayer]:
    """A layer reading several tensors (merges, attention).

    Elementwise merges (add, subtract…) of feature maps only are written on the channels-last
    tensors as they are: elementwise, they compute the same numbers in either layout; a
    concatenate of feature maps has its canonical axis moved to Keras's (1 -> -1). Any other
    layer reading a feature map assumes features on the last axis, which Keras' channels-last
    maps do not hold in canonical (channels-first) terms: refuse it rather than merge or
    concatenate along the wrong axis.
    """
    tags = spec_tags(ctx.archive.spec)
    maps = [s for s in sources if tags.get(s, PLAIN) != PLAIN]
    if maps and layer.kind in MAP_MERGE_KINDS and len(maps) == len(sources):
        ctx.layout = CHANNELS
    elif maps and layer.kind in MAP_MERGE_KINDS:
        ctx.layout = PLAIN  # _canonical_inputs moved the feature maps channels-first
    elif maps:
        raise UnsupportedLayerError(
            f"{layer.kind} reads feature maps ({', '.join(maps)}); weightio writes a merge of "
            "channels-first feature maps into a channels-last Keras model only for elementwise "
            "merges whose inputs are all feature maps. Flatten or pool before merging",
            layer=layer.name,
        )
    return KERAS_WRITE.lookup(layer.kind, layer=layer.name)(layer, ctx)


@dataclass(frozen=True)
class KerasCall:
    """One call of a Keras layer (its ``node``-th inbound node) and the tensor it outputs: a
    layer called again for a further call of a spec layer (``sharing.calls_of``) outputs, per
    call, a tensor of the shape that call's input gives.
    """

    layer: KerasLayer
    node: int
    output_shape: Shape

    @property
    def name(self) -> str:
        """The called layer's name."""
        return self.layer.name

    @property
    def dtype(self) -> str:
        """The dtype the call outputs."""
        return self.layer.dtype

    @property
    def key(self) -> tuple[str, int]:
        """``(layer, node)``, as ``keras_history`` names the call."""
        return (self.layer.name, self.node)


def _first_call(layer: KerasLayer) -> KerasCall:
    return KerasCall(layer, 0, layer.output_shape)


def _inbound(layer: KerasLayer, producers: list[KerasCall]) -> dict[str, Any]:
    """The layer's inbound node for one call: its arguments, each tensor by ``keras_history``."""
    refs = [keras_tensor(p.output_shape, p.dtype, p.name, p.node) for p in producers]
    args: list[Any]
    if layer.call == "list":
        args = [refs]
    elif layer.call == "query_value":
        args = [refs[0], refs[0]]
    elif layer.call == "query_value_mask":
        return {"args": [refs[0], refs[0]], "kwargs": {**layer.call_kwargs, "value_mask": refs[1]}}
    elif layer.call == "args":
        args = [refs[0] if arg == INPUT else arg for arg in layer.call_args]
    else:
        args = [refs[0]]
    return {"args": args, "kwargs": dict(layer.call_kwargs)}


def _parents(layer: KerasLayer, producers: list[KerasCall]) -> list[tuple[str, int]]:
    """The calls whose tensors a call reads, in argument order (``mha(x, x)`` reads ``x`` twice)."""
    keys = [p.key for p in producers]
    if layer.call == "query_value_mask":
        return [keys[0], keys[0], keys[1]]
    return [keys[0], keys[0]] if layer.call == "query_value" else keys


def _functional(
    archive: Archive, names: NameAllocator, inputs: dict[str, KerasLayer], dtypes: dict[str, str],
    model_name: str, settings: KerasSettings,
) -> KerasModelPlan:
    """Wire the layers in topological order; each reads the tensors its spec inputs name.

    A further call of a spec layer (``sharing.calls_of``) calls the first call's Keras layers
    holding arrays again (one more inbound node) instead of adding layers of its own.
    """
    spec = archive.spec
    ends = {name: _first_call(layer) for name, layer in inputs.items()}  # spec tensor -> its call
    by_name: dict[str, KerasLayer] = {layer.name: layer for layer in inputs.values()}
    parents: dict[tuple[str, int], list[tuple[str, int]]] = {(name, 0): [] for name in by_name}
    nodes: dict[str, list[dict[str, Any]]] = {name: [] for name in by_name}
    calls = calls_of(spec)
    written: dict[str, list[KerasLayer]] = {}  # spec layer -> the Keras layers written for it
    tied: set[str] = set()

    def call(keras_layer: KerasLayer, producers: list[KerasCall], shape: Shape) -> KerasCall:
        made = KerasCall(keras_layer, len(nodes.setdefault(keras_layer.name, [])), shape)
        by_name.setdefault(keras_layer.name, keras_layer)
        nodes[keras_layer.name].append(_inbound(keras_layer, producers))
        parents[made.key] = _parents(keras_layer, producers)
        return made

    for index in spec.topological_order():
        layer = spec.layers[index]
        sources = spec.layer_inputs(index)
        masked = layer.kind == "multi_head_attention" and layer.key_padding_mask
        if len(sources) != 1 and layer.kind not in MULTI_INPUT_KINDS and not masked:
            raise UnsupportedLayerError(
                f"a {layer.kind} layer takes one input, the spec gives it "
                f"{len(sources)}: {sources}",
                layer=layer.name,
            )
        producers = [ends[s] for s in sources]
        if len(sources) > 1 and not masked:
            moved = _canonical_inputs(layer, archive, names, sources, producers, dtypes[sources[0]])
            for index_, permute in enumerate(moved):
                if permute is not None:
                    producers[index_] = call(permute, [producers[index_]], permute.output_shape)
        shapes = [p.output_shape for p in producers]
        ctx = WriteContext(archive, dtypes[sources[0]], names, shapes, settings=settings)
        single = len(sources) == 1 or masked
        built = write_layer(layer, ctx, sources[0]) if single else _write_merge(layer, ctx, sources)
        first = calls.get(layer.name)
        reused = reused_layers(built, written[first]) if first is not None else []
        if reused:
            tied.add(layer.name)
        written[layer.name] = [again or own for own, again in zip(built, reused)] if reused else built
        for position, keras_layer in enumerate(built):
            target = reused[position] if reused and reused[position] is not None else keras_layer
            producers = [call(target, producers, keras_layer.output_shape)]
        ends[layer.name] = producers[0]
        dtypes[layer.name] = ctx.dtype
    warn_untied(spec, tied)
    in_calls = [(inputs[inp.name].name, 0) for inp in spec.inputs]
    out_calls = [ends[out.layer].key for out in spec.outputs]
    order = keras_layer_order(parents, out_calls, in_calls)
    layers = [by_name[name] for name in order]
    entries = [{**layer.serialized(), "name": layer.name, "inbound_nodes": nodes[layer.name]} for layer in layers]

    def endpoints(points: list[tuple[str, int]]) -> list[Any]:
        refs = [[name, node, 0] for name, node in points]
        return refs[0] if len(refs) == 1 else refs

    config = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": model_name, "trainable": True, "layers": entries,
            "input_layers": endpoints(in_calls), "output_layers": endpoints(out_calls),
        },
        "registered_name": "Functional",
        "build_config": {"input_shape": None},
        "compile_config": {},
    }
    return KerasModelPlan(config, layers, sequential=False)


def keras_layer_order(
    parents: dict[tuple[str, int], list[tuple[str, int]]],
    outputs: list[tuple[str, int]], inputs: list[tuple[str, int]],
) -> list[str]:
    """The order Keras gives a Functional model's operations (``map_graph``), from its calls
    (``(layer, node)``) and the calls each reads.

    A depth-first walk from each output (in order) numbers every operation when first seen and
    lists calls inputs-first; a call's depth is the longest path from it to an output, and an
    operation's the deepest of its calls (which its later-listed calls then take on, as Keras
    does for shared layers). Operations come deepest first, ties in the order the walk first saw
    them; inputs no output depends on come last among depth 0 (Keras numbers them -1).
    """
    finished: set[tuple[str, int]] = set()
    walk: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for output in outputs:
        if output in finished:
            continue
        seen.setdefault(output[0], len(seen))
        stack = [(output, iter(parents[output]))]
        while stack:
            node, pending = stack[-1]
            parent = next(pending, None)
            if parent is None:
                stack.pop()
                finished.add(node)
                walk.append(node)
            elif parent not in finished:
                seen.setdefault(parent[0], len(seen))
                stack.append((parent, iter(parents[parent])))
    node_depth: dict[tuple[str, int], int] = {}
    depth: dict[str, int] = {}
    for node in reversed(walk):
        own = max(node_depth.setdefault(node, 0), depth.get(node[0], 0))
        depth[node[0]] = node_depth[node] = own
        for parent in parents[node]:
            node_depth[parent] = max(own + 1, node_depth.get(parent, 0))
    for name, _node in inputs:
        if name not in depth:
            depth[name], seen[name] = 0, -1
    return sorted(depth, key=lambda name: (-depth[name], seen[name]))
