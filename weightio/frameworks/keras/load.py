"""Copy an archive's weights into an existing Keras model of the same structure."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import (
    StructureMismatchError,
    UnsupportedLayerError,
    WeightsOnlyArchiveError,
)
from weightio.format.archive import Archive
from weightio.frameworks.keras.model import read_keras_model
from weightio.frameworks.keras.write.base import KERAS_WRITE, NameAllocator, WriteContext
from weightio.frameworks.keras.write.bridge import input_form, prepare, spec_ranks, spec_tags
from weightio.frameworks.keras.write.build import live_settings
from weightio.frameworks.pairing import LoadReport, pair_layers, with_parameters
from weightio.layouts.flow import PLAIN, unfolded_flattens
from weightio.layouts.transforms import conv_weight_to_keras
from weightio.optional import require
from weightio.spec.activations import LINEAR, ActivationFn
from weightio.spec.base import LayerBase


def _weights_only(layer: LayerBase) -> LayerBase:
    """``layer`` with the settings that shape a built model but not its weights made plain.

    ``load_into`` copies weights only: a fused activation Keras has no exact string for, or a
    time-major RNN, would make the mapping refuse to build a layer whose weights still fit.
    """
    update: dict[str, Any] = {}
    if isinstance(getattr(layer, "activation", None), ActivationFn) and layer.kind != "activation":
        update["activation"] = LINEAR
    if getattr(layer, "batch_first", True) is False:
        update["batch_first"] = True
    return layer.model_copy(update=update) if update else layer


def _keras_weights(
    archive: Archive, layer: LayerBase, target: LayerBase | None = None
) -> list[np.ndarray]:
    """The arrays the paired Keras layer's ``set_weights`` takes, from the archive layer.

    They come from the same mapping that writes the layer into a new model (``KERAS_WRITE``):
    the one Keras layer of its output that holds weights. Only the rank of the input matters to
    the weights, so the mapping sees free dimensions.
    """
    if layer.kind == "opaque":  # no mapping: its tensors are var_0, var_1… in Keras weight order
        return [np.asarray(archive.tensors[ref.key]) for ref in layer.tensor_refs().values()]
    layer = _weights_only(layer)
    names = NameAllocator()
    names.reserve(layer.name)
    spec = archive.spec
    index = next(i for i, l in enumerate(spec.layers) if l.name == layer.name)
    source = spec.layer_inputs(index)[0]
    rank = spec_ranks(spec).get(source) or int(getattr(layer, "rank", 0)) + 2
    ctx = WriteContext(
        archive, "float32", names, [(None,) * (rank - 1)],
        layout=input_form(layer, spec_tags(spec).get(source, PLAIN)),
        settings=live_settings(require("keras", purpose="loading weights into a Keras model")),
    )
    built = [k for k in KERAS_WRITE.lookup(layer.kind, layer=layer.name)(layer, ctx) if k.weights]
    if not built:
        raise UnsupportedLayerError(
            f"Keras keeps this {layer.kind} layer's parameters in its config, not in weights, so "
            "they cannot be loaded into an existing layer; build the model with to_keras instead",
            layer=layer.name,
        )
    if len(built) > 1:
        raise UnsupportedLayerError(
            f"this {layer.kind} layer becomes {len(built)} Keras layers with weights (one per "
            "stacked layer) and pairs with one; load each into its own",
            layer=layer.name,
        )
    mapped = built[0]
    wanted = "" if target is None else (target.source_class or "").rsplit(".", 1)[-1]
    if mapped.class_name.startswith("DepthwiseConv") and wanted.startswith("Conv"):
        # A Conv*D(groups=in) reads as the same spec as a DepthwiseConv*D: its kernel is the
        # grouped layout instead.
        return [conv_weight_to_keras(np.asarray(archive.tensors[layer.weight.key])), *mapped.weights[1:]]
    return mapped.weights


def _keras_layer(model: Any, name: str) -> Any:
    """The layer a read spec names, inside nested models too (``outer/inner/dense``)."""
    from weightio.frameworks.keras.read.nested import NEST

    layer = model
    for part in name.split(NEST):
        layer = layer.get_layer(part)
    return layer


def load_into_keras(archive: Archive, model: Any, *, strict: bool = True) -> LoadReport:
    """Copy ``archive``'s weights into an existing Keras model of the same structure.

    Layers with parameters are paired in order; kinds, parameter names, shapes and dtypes must
    agree (nothing is cast). Activations are not compared: an archive from PyTorch holds
    ``Linear`` + ``ReLU`` where Keras has ``Dense(activation="relu")``, and both compute the same.
    With ``strict=False`` a pair that does not fit is skipped (a new head), and the report says so.

    Returns:
        A ``LoadReport``: the model, the ``layer/parameter`` names loaded, what was skipped and
        what was left with its own values.

    Raises:
        WeightsOnlyArchiveError: the archive has no structure to pair layers by.
        StructureMismatchError: (strict) naming every mismatched layer at once; the model is
            untouched.
    """
    if archive.spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (a bare state dict), with no layer structure to "
            "pair with the Keras model's layers; read the source model itself instead",
            file=archive.path,
        )
    archive = prepare(archive)  # a flatten's order folded into its Dense
    stuck = unfolded_flattens(
        archive, lambda layer, tag: "channels_last" if tag == "channels" else "channels_first"
    )
    if stuck:
        raise StructureMismatchError(
            f"flatten {stuck[0]!r} flattens in PyTorch's channels-first order and its dense "
            "weights could not be reordered for Keras's Flatten (no Dense right after it, or a "
            "free input size); use to_keras(archive) instead, which keeps the order exactly",
            file=archive.path, layer=stuck[0],
        )
    report = LoadReport(model)
    unloadable: set[str] = set()
    for layer in with_parameters(archive.spec.layers):  # refuses what Keras keeps in its config
        try:
            _keras_weights(archive, layer)
        except UnsupportedLayerError as exc:
            if strict:
                raise
            unloadable.add(layer.name)
            report.skipped.append(f"layer {layer.name!r}: {exc.message}")
    ours = [layer for layer in archive.spec.layers if layer.name not in unloadable]
    target = read_keras_model(model)
    pairing = pair_layers(ours, target.spec.layers, target="Keras model")
    if pairing.problems and strict:
        paired = {a.name for a, _ in pairing.pairs}
        first = next((a.name for a in with_parameters(ours) if a.name not in paired), None)
        raise StructureMismatchError(
            "the archive and the Keras model differ: " + "; ".join(pairing.problems),
            file=archive.path, layer=first,
        )
    report.skipped += pairing.skipped
    report.missing += [f"layer {layer.name!r} ({', '.join(layer.tensor_refs())})"
                       for layer in pairing.missing]
    updates = [(theirs.name, _keras_weights(archive, ours_layer, theirs))
               for ours_layer, theirs in pairing.pairs]
    for name, weights in updates:  # every layer mapped before any is touched
        _keras_layer(model, name).set_weights(weights)
    report.loaded = [f"{theirs.name}/{param}" for _, theirs in pairing.pairs
                     for param in theirs.tensor_refs()]
    return report
