"""Which tensors of a serialized Keras model are channels-last feature maps, from the config alone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from weightio.frameworks.keras.read.base import KERAS_READ, KerasLayerEntry, class_key, class_trait
from weightio.frameworks.keras.read.graph import functional_inputs, node_shapes, part_name
from weightio.layouts.flow import CHANNELS, PLAIN
from weightio.layouts.transforms import (
    channels_first_axes,
    channels_last_axes,
    shape_channels_first,
)
from weightio.spec.model import InputSpec

#: The registry key of the one Keras call with several outputs weightio reads (``ops.split``).
MULTI_OUTPUT_KEY = "keras.src.ops.numpy.Split"
#: Traits of the Keras layers that read feature maps (a tensor they read is one).
READS_MAPS = ("spatial", "spatial_reduce")
#: Traits through which a reader's need for a feature map reaches the producer.
PASSES_FORM = ("elementwise", "per_channel", "merge", "join")

# -- which tensors are feature maps -----------------------------------------------------------


@dataclass
class LayoutMove:
    """An exact permute the reader puts before a layer: its input ``slot`` is held in form
    ``have`` (canonically) and the layer's Keras mapping reads it in form ``want``.

    Keras holds a ``(batch, steps, features)`` sequence and a channels-last feature map alike,
    so a Keras layer never needs one; the spec computes feature maps channels-first, so a
    sequence read by a ``Conv1D`` or a pooling layer (or a feature map read by a Dense, an RNN,
    attention, layer norm) is a different canonical tensor, and an explicit permute says so.
    """

    slot: int
    source: str
    have: str
    want: str
    rank: int


@dataclass
class KerasForms:
    """The form of every tensor of a serialized Keras model, as the reader records it.

    ``tags`` is each Keras input's and layer output's own form; ``input_tags`` the forms a
    layer's mapping sees its inputs in, after the ``moves`` the reader inserts before it.
    """

    tags: dict[str, str]
    sources: dict[str, list[str]]
    input_tags: dict[str, list[str]]
    moves: dict[str, list[LayoutMove]] = field(default_factory=dict)


def _input_ranks(raw: dict[str, Any]) -> list[int | None]:
    """The rank (batch included) of each input of a layer: from the tensors its call recorded
    (Keras 3 nodes carry each tensor's shape), else from its ``build_config``.
    """
    recorded = node_shapes(raw)
    if recorded and all(shape is not None for shape in recorded):
        return [len(shape) for shape in recorded]  # type: ignore[arg-type]
    build = raw.get("build_config")
    if not isinstance(build, dict):
        return []
    shape = build.get("input_shape")
    if shape is None and isinstance(build.get("shapes_dict"), dict):
        shape = build["shapes_dict"].get("query_shape")
    if not isinstance(shape, (list, tuple)):
        return []
    if shape and all(isinstance(item, (list, tuple)) for item in shape):
        return [len(item) for item in shape]
    return [len(shape)]


def _class_rank(class_name: str) -> int | None:
    """The tensor rank a spatial Keras class (``Conv1D``, ``MaxPooling2D``…) reads and writes."""
    match = re.search(r"([123])D", class_name)
    return int(match.group(1)) + 2 if match else None


#: Traits whose output has the rank of their (first) input.
_KEEPS_RANK = ("spatial", "elementwise", "per_channel", "merge", "join", "permute")
#: Plain classes whose output has the rank of their input (they compute on the last axis).
_PLAIN_KEEPS_RANK = ("Dense", "LayerNormalization", "MultiHeadAttention")
_RECURRENT = ("SimpleRNN", "LSTM", "GRU", "Bidirectional")


def _tensor_ranks(
    order: list[str],
    classes: dict[str, str],
    configs: dict[str, dict[str, Any]],
    raws: dict[str, dict[str, Any]],
    sources: dict[str, list[str]],
) -> dict[str, int]:
    """The rank (batch included) of every tensor the config fixes.

    First what each call recorded of the tensors it reads (Keras 3 nodes, ``build_config``),
    then, in graph order, what the kinds imply: inputs have their declared rank, spatial,
    elementwise, per-channel, merging and permuting layers keep their input's, spatial
    classes (``Conv1D``…) have theirs, global pooling drops the steps unless kept, a
    ``Reshape`` has its target's, a ``Flatten`` is a batch of vectors.
    """
    ranks: dict[str, int] = {}
    for name in order:
        if classes[name] == "InputLayer":
            shape = configs[name].get("batch_shape", configs[name].get("batch_input_shape"))
            if isinstance(shape, (list, tuple)):
                ranks[name] = len(shape)
        recorded = _input_ranks(raws[name])
        for slot, source in enumerate(sources.get(name, [])):
            if slot < len(recorded) and recorded[slot] is not None:
                ranks.setdefault(source, recorded[slot])  # type: ignore[arg-type]
    for name in order:
        if name in ranks:
            continue
        cls, srcs = classes[name], sources.get(name, [])
        trait = class_trait(cls)
        first = ranks.get(srcs[0]) if srcs else None
        config = configs[name]
        inner = config.get("layer") if cls == "Bidirectional" else config
        if trait == "spatial" and _class_rank(cls):
            ranks[name] = _class_rank(cls)  # type: ignore[assignment]
        elif (trait in _KEEPS_RANK or cls in _PLAIN_KEEPS_RANK) and first is not None:
            ranks[name] = first
        elif trait == "spatial_reduce" and _class_rank(cls):
            ranks[name] = _class_rank(cls) if config.get("keepdims") else 2  # type: ignore[assignment]
        elif cls == "Embedding" and first is not None:
            ranks[name] = first + 1
        elif cls == "Reshape" and isinstance(config.get("target_shape"), (list, tuple)):
            ranks[name] = len(config["target_shape"]) + 1
        elif cls == "Flatten":
            ranks[name] = 2
        elif cls in _RECURRENT and isinstance(inner, dict):
            sequences = (inner.get("config") or {}).get("return_sequences") if cls == "Bidirectional" \
                else inner.get("return_sequences")
            ranks[name] = 3 if sequences else 2
    return ranks


def _is_reduction(class_name: str) -> bool:
    """A class read as ``reduce`` (``keras.ops.mean``…): it takes either form."""
    return class_name in KERAS_READ and set(KERAS_READ.produces(class_name)) == {"reduce"}


def needed_form(class_name: str, config: dict[str, Any]) -> str | None:
    """The form a Keras class's mapping reads its input in; None when it takes either.

    The mirror of the Keras writer's bridge: spatial kinds read feature maps; per-channel,
    flatten/reshape/permute and axis-free elementwise kinds take either (and place their axes
    by the form); merges decide together (``_merge_form``); every other kind computes on the
    last axis of Keras's own tensor, which is a plain tensor in the spec.
    """
    trait = class_trait(class_name)
    if trait in READS_MAPS:
        return CHANNELS
    if _is_reduction(class_name):
        return None  # a reduction's axes are mapped to the form it reads
    if trait is None or trait in ("flatten", "reshape", "permute", "per_channel", "merge", "join"):
        return None
    if trait == "elementwise":
        activation = config.get("activation")
        with_axis = class_name == "Softmax" or (
            class_name == "Activation" and activation in ("softmax", "log_softmax")
        )
        return PLAIN if with_axis else None
    return PLAIN


def multi_output_layers(layer_configs: Sequence[Any]) -> frozenset[str]:
    """The names of the calls with several outputs (``ops.split``), read as one tensor each."""
    names = set()
    for raw in layer_configs:
        if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
            module = raw.get("module") if isinstance(raw.get("module"), str) else None
            if class_key(str(raw.get("class_name")), module) == MULTI_OUTPUT_KEY:
                names.add(str(raw["config"].get("name") or raw.get("name") or ""))
    return frozenset(names)


def _split_parts(cuts: Any) -> int:
    """How many outputs ``ops.split(x, cuts)`` has: ``cuts`` sections, or one more than indices."""
    if isinstance(cuts, int) and not isinstance(cuts, bool):
        return max(cuts, 0)
    return len(cuts) + 1 if isinstance(cuts, (list, tuple)) else 0


def keras_forms(layer_configs: Sequence[dict[str, Any]], *, sequential: bool) -> KerasForms:
    """The form of every Keras input and layer output, and the permutes to put between them,
    from the serialized config alone.

    Each tensor has one form: a spatial layer's output is a feature map, and so is an input,
    Reshape or Permute some spatial layer reads (through elementwise layers); everything else
    is plain. Where a layer reads a tensor in the other form, a ``LayoutMove`` records the
    exact permute, so no mapping ever guesses which axis is steps and which is features.
    """
    classes: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    configs: dict[str, dict[str, Any]] = {}
    raws: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    splits = multi_output_layers(layer_configs)
    previous: str | None = None
    for raw in layer_configs:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            continue
        module = raw.get("module") if isinstance(raw.get("module"), str) else None
        cls = class_key(str(raw.get("class_name")), module)
        name = str(raw["config"].get("name") or raw.get("name") or "")
        classes[name], configs[name], raws[name] = cls, raw["config"], raw
        if cls == "InputLayer":
            sources[name] = []
        elif sequential:
            sources[name] = [previous] if previous is not None else ["input_layer"]
        else:
            try:
                sources[name] = functional_inputs(raw, name, multi_output=splits)
            except Exception:  # the main reader reports malformed wiring properly
                sources[name] = []
        order.append(name)
        previous = name
    users: dict[str, list[str]] = {}
    for name, srcs in sources.items():
        for src in srcs:
            users.setdefault(src, []).append(name)

    def read_as_feature_map(name: str) -> bool:
        pending, seen = list(users.get(name, [])), set()
        while pending:
            user = pending.pop()
            if user in seen:
                continue
            seen.add(user)
            trait = class_trait(classes.get(user, ""))
            if trait in READS_MAPS:
                return True
            if trait in PASSES_FORM:
                pending.extend(users.get(user, []))
        return False

    ranks = _tensor_ranks(order, classes, configs, raws, sources)

    def rank_of(source: str, consumer: str, slot: int) -> int | None:
        recorded = _input_ranks(raws[consumer])
        if slot < len(recorded) and recorded[slot] is not None:
            return recorded[slot]
        if source in ranks:
            return ranks[source]
        cls = classes.get(consumer, "")
        return _class_rank(cls) if class_trait(cls) in READS_MAPS else None  # Conv1D reads rank 3

    forms = KerasForms(tags={}, sources=sources, input_tags={})
    tags = forms.tags
    for name in order:
        cls, srcs = classes[name], sources[name]
        trait = class_trait(cls)
        have = [tags.get(s, PLAIN) for s in srcs]
        want: list[str | None] = [needed_form(cls, configs[name])] * len(srcs)
        if trait in ("merge", "join") and len(set(have)) > 1:
            want = [PLAIN] * len(srcs)  # Keras holds both alike; the spec joins them plain
        seen_forms = list(have)
        for slot, (src, form, need) in enumerate(zip(srcs, have, want)):
            if need is None or need == form:
                continue
            rank = rank_of(src, name, slot)
            if rank is None or rank < 3:
                continue  # a vector is the same in both forms; an unknown rank stays as it was
            forms.moves.setdefault(name, []).append(LayoutMove(slot, src, form, need, rank))
            seen_forms[slot] = need
        forms.input_tags[name] = seen_forms
        if trait == "spatial":
            tag = CHANNELS
        elif trait == "spatial_reduce":
            tag = CHANNELS if configs[name].get("keepdims") else PLAIN
        elif _is_reduction(cls):  # axes mapped to its input's form: a map only when kept
            keep = bool(configs[name].get("keepdims"))
            tag = CHANNELS if keep and seen_forms[:1] == [CHANNELS] else PLAIN
        elif cls == "InputLayer" or trait in ("reshape", "permute"):
            tag = CHANNELS if read_as_feature_map(name) else PLAIN
        elif trait in ("elementwise", "per_channel"):
            tag = seen_forms[0] if seen_forms else PLAIN
        elif trait in ("merge", "join"):
            tag = CHANNELS if seen_forms and all(f == CHANNELS for f in seen_forms) else PLAIN
        else:
            tag = PLAIN
        tags[name] = tag
        if name in splits:  # each output of a split keeps its input's form
            for k in range(_split_parts(configs[name].get("indices_or_sections"))):
                tags[part_name(name, k)] = tag
    if sequential and "input_layer" not in tags:
        tags["input_layer"] = CHANNELS if read_as_feature_map("input_layer") else PLAIN
        first = order[0] if order else None
        if first is not None and sources.get(first) == ["input_layer"]:
            _recheck_first(forms, first, classes[first], configs[first], raws[first])
    return forms


def _recheck_first(
    forms: KerasForms, name: str, cls: str, config: dict[str, Any], raw: dict[str, Any]
) -> None:
    """A Sequential without an InputLayer: its first layer's input form is known only now."""
    have = forms.tags["input_layer"]
    need = needed_form(cls, config)
    forms.moves.pop(name, None)
    forms.input_tags[name] = [have]
    ranks = _input_ranks(raw)
    if need is not None and need != have and ranks and ranks[0] >= 3:
        forms.moves[name] = [LayoutMove(0, "input_layer", have, need, ranks[0])]
        forms.input_tags[name] = [need]


def move_dims(move: LayoutMove) -> tuple[int, ...]:
    """The canonical permute (non-batch axes, from 1) of a ``LayoutMove``.

    Into a feature map: Keras's tensor is the channels-last form, canonical is channels-first.
    Out of one: the canonical channels-first map back to Keras's own (channels-last) order.
    """
    axes = channels_first_axes(move.rank) if move.want == CHANNELS else channels_last_axes(move.rank)
    return axes[1:]


def channels_input(inp: InputSpec) -> InputSpec:
    """A Keras feature-map input: canonical (channels-first) shape, ``layout='channels_last'``."""
    if len(inp.shape) < 2:
        return inp
    return inp.model_copy(
        update={"shape": shape_channels_first(tuple(inp.shape)), "layout": "channels_last"}
    )


def layout_refusal(entry: KerasLayerEntry) -> str | None:
    """Why a layer cannot be mapped in the form its input is in, or None when it can.

    After the reader's permutes (``keras_forms``) every layer sees its input in the form its
    mapping needs; what is left is a tensor of unknown rank (no ``build_config``), which the
    reader cannot move. Mapping such a layer as if the form were right would compute different
    numbers (steps taken for features), so it is kept opaque instead.
    """
    cls = entry.class_name
    key = class_key(cls, entry.module)
    trait = class_trait(key)
    need = needed_form(key, entry.config)
    if trait in ("merge", "join"):
        if len(set(entry.input_tags)) <= 1:
            return None
        return (
            f"{cls} merges a channels-last feature map with plain data of unknown rank here; "
            "the two have no common channels-first form. Merge feature maps only"
        )
    wrong = [tag for tag in entry.input_tags if need is not None and tag != need]
    if not wrong:
        return None
    if need == CHANNELS:
        return (
            f"{cls} reads a tensor of unknown rank that is not a feature map here; weightio "
            "cannot tell its steps from its features. Save the model built (with its input shape)"
        )
    return (
        f"{cls} reads a channels-last feature map of unknown rank here; weightio's spec is "
        f"channels-first and its {cls} mapping assumes features on the last axis"
    )
