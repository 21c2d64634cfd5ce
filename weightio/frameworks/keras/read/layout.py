"""Which tensors of a serialized Keras model are channels-last feature maps, from the config alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from weightio.frameworks.keras.read.base import KerasLayerEntry, class_trait
from weightio.frameworks.keras.read.graph import functional_inputs
from weightio.layouts.flow import CHANNELS, PLAIN
from weightio.layouts.transforms import (
    shape_channels_first,
)
from weightio.spec.model import InputSpec

#: Traits of the Keras layers that read feature maps (a tensor they read is one).
READS_MAPS = ("spatial", "spatial_reduce")
#: Traits through which a reader's need for a feature map reaches the producer.
PASSES_FORM = ("elementwise", "per_channel", "merge", "join")
#: Traits whose Keras mapping handles a feature-map input (beyond the elementwise ones).
MAP_AWARE = ("spatial", "spatial_reduce", "flatten", "reshape", "permute", "per_channel")

# -- which tensors are feature maps -----------------------------------------------------------


def keras_tags(
    layer_configs: Sequence[dict[str, Any]], *, sequential: bool
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The tag (``channels``/``plain``) of every Keras input and layer output, and each layer's
    sources, from the serialized config alone.

    A tensor is a feature map when a spatial layer produced it, or when some reader of it
    (through elementwise layers) is a spatial layer (inputs, Reshape, Permute).
    """
    classes: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    configs: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    previous: str | None = None
    for raw in layer_configs:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            continue
        cls = str(raw.get("class_name"))
        name = str(raw["config"].get("name") or raw.get("name") or "")
        classes[name], configs[name] = cls, raw["config"]
        if cls == "InputLayer":
            sources[name] = []
        elif sequential:
            sources[name] = [previous] if previous is not None else ["input_layer"]
        else:
            try:
                sources[name] = functional_inputs(raw, name)
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

    tags: dict[str, str] = {}
    for name in order:
        cls, srcs = classes[name], sources[name]
        trait = class_trait(cls)
        if trait == "spatial":
            tag = CHANNELS
        elif trait == "spatial_reduce":
            tag = CHANNELS if configs[name].get("keepdims") else PLAIN
        elif cls == "InputLayer" or trait in ("reshape", "permute"):
            tag = CHANNELS if read_as_feature_map(name) else PLAIN
        elif trait in ("elementwise", "per_channel"):
            tag = tags.get(srcs[0], PLAIN) if srcs else PLAIN
        elif trait in ("merge", "join"):
            tag = CHANNELS if srcs and all(tags.get(s, PLAIN) == CHANNELS for s in srcs) else PLAIN
        else:
            tag = PLAIN
        tags[name] = tag
    if sequential and "input_layer" not in tags:
        tags["input_layer"] = CHANNELS if read_as_feature_map("input_layer") else PLAIN
    return tags, sources


def channels_input(inp: InputSpec) -> InputSpec:
    """A Keras feature-map input: canonical (channels-first) shape, ``layout='channels_last'``."""
    if len(inp.shape) < 2:
        return inp
    return inp.model_copy(
        update={"shape": shape_channels_first(tuple(inp.shape)), "layout": "channels_last"}
    )


def layout_refusal(entry: KerasLayerEntry) -> str | None:
    """Why a layer reading a feature map cannot be mapped, or None when it can.

    Keras computes such a layer on the channels-last form; mapping it as if the data were
    canonical (channels-first) would compute different numbers, so it is kept opaque instead.
    """
    if CHANNELS not in entry.input_tags:
        return None
    cls = entry.class_name
    activation = entry.config.get("activation")
    with_axis = cls == "Softmax" or (
        cls == "Activation" and activation in ("softmax", "log_softmax")
    )
    trait = class_trait(cls)
    if (trait == "elementwise" and not with_axis) or trait in MAP_AWARE:
        return None
    if trait in ("merge", "join"):
        if all(tag == CHANNELS for tag in entry.input_tags):
            return None  # elementwise (or axis-mapped) on maps: exact in either layout
        return (
            f"{cls} merges a channels-last feature map with plain data here; the two have no "
            "common channels-first form. Merge feature maps only (or flatten/pool both first)"
        )
    return (
        f"{cls} reads a channels-last feature map here; weightio's spec is channels-first and "
        f"its {cls} mapping assumes features on the last axis. Flatten or pool first"
    )
