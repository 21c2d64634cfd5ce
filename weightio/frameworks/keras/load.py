"""Copy an archive's weights into an existing Keras model of the same structure."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import StructureMismatchError, UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.keras.model import read_keras_model
from weightio.frameworks.keras.native import keras_layers_of
from weightio.frameworks.keras.write.bridge import prepare
from weightio.frameworks.keras.write.build import live_settings
from weightio.frameworks.pairing import LoadReport, pair_by_position, pair_layers, with_parameters
from weightio.layouts.flow import unfolded_flattens
from weightio.layouts.transforms import conv_weight_to_keras
from weightio.optional import require
from weightio.spec.base import LayerBase


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
    settings = live_settings(require("keras", purpose="loading weights into a Keras model"))
    built = keras_layers_of(archive, layer, settings)
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
    A weights-only archive (a bare PyTorch state dict) has no layers to pair: its tensors go
    into the model's by canonical position instead (``_from_state_dict``).

    Returns:
        A ``LoadReport``: the model, the ``layer/parameter`` names loaded, what was skipped and
        what was left with its own values.

    Raises:
        StructureMismatchError: (strict) naming every mismatched layer (or, from a state dict,
            every mismatched pair of tensors) at once; the model is untouched.
    """
    positional: LoadReport | None = None
    if archive.spec.weights_only:
        archive, positional = _from_state_dict(archive, model, strict=strict)
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
    kept = set() if positional is None else {name.split("/")[0] for name in positional.missing}
    updates = [(theirs.name, _keras_weights(archive, ours_layer, theirs))
               for ours_layer, theirs in pairing.pairs if theirs.name not in kept]
    for name, weights in updates:  # every layer mapped before any is touched
        _keras_layer(model, name).set_weights(weights)
    report.loaded = [f"{theirs.name}/{param}" for _, theirs in pairing.pairs
                     for param in theirs.tensor_refs() if theirs.name not in kept]
    if positional is not None:
        report.skipped += positional.skipped
        report.missing += positional.missing
    return report


def _from_state_dict(
    archive: Archive, model: Any, *, strict: bool
) -> tuple[Archive, LoadReport]:
    """A bare state dict as a full archive of the Keras model's own structure.

    The model is read into a spec, and the state dict's tensors take its tensors' places by
    canonical position (``frameworks.pairing.pair_by_position``), shapes and dtypes checked.
    The state dict is PyTorch's, so every flatten of a feature map is marked channels-first
    (``nn.Flatten``'s order): ``prepare`` then permutes the dense rows after it into Keras'
    channels-last order. With ``strict=False`` the model's tensors that got nothing keep their
    values, and the returned report (``layer/parameter`` names) says which.

    Raises:
        StructureMismatchError: (strict) naming every pair that disagrees, both tensors each.
    """
    target = read_keras_model(model)
    pairing = pair_by_position(archive, target, target_name="Keras model")
    if pairing.problems and strict:
        raise StructureMismatchError(
            "the state dict does not fit the Keras model by canonical position (the n-th "
            "tensor into the n-th, in PyTorch's layout): " + "; ".join(pairing.problems[:20])
            + ". Nothing was loaded; the model must have the state dict's architecture",
            file=archive.path,
        )
    arrays = {theirs: np.asarray(archive.tensors[ours]) for ours, theirs in pairing.pairs}
    candidate = target.replace(arrays)
    spec = candidate.spec
    layers = [layer.model_copy(update={"order": "channels_first"}) if layer.kind == "flatten"
              else layer for layer in spec.layers]
    candidate = candidate.with_spec(spec.model_copy(update={"layers": layers}))
    # A layer that got only some of its tensors is left whole as it is (its own values, in
    # Keras' order, must not pass through the flatten fold): its given tensors are skipped.
    names = {ref.key: (layer.name, param) for layer in spec.layers
             for param, ref in layer.tensor_refs().items()}
    kept = {names[key][0] for key in pairing.missing}
    report = LoadReport(model, skipped=list(pairing.skipped))
    for ours, theirs in pairing.pairs:
        if names[theirs][0] in kept:
            report.skipped.append(f"tensor {ours!r}: fits {'/'.join(names[theirs])}, but other "
                                  f"tensors of layer {names[theirs][0]!r} do not, so it is left as it is")
    report.missing = [f"{layer}/{param}" for layer, param in names.values() if layer in kept]
    return candidate, report
