"""Pairing an archive's layers with a live model's, for ``load_into``, the same way everywhere.

A live target (``nn.Module``, ``keras.Model``) is first read into a spec of its own; its layers
with parameters are then paired with the archive's *by order*, because a model read from another
framework has other layer names. A pair must agree on kind, parameter names, shapes and dtypes
(nothing is ever cast). Every disagreement is collected, so the user sees them all at once.

With ``strict=False`` (transfer learning: a backbone into a model with a new head) a pair that
does not fit is skipped instead, and the ``LoadReport`` says what was loaded, what of the
archive was skipped and why, and what of the target was left with its own values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weightio.spec.base import LayerBase


@dataclass
class LoadReport:
    """What ``load_into`` did: the model, and what was loaded, skipped and left missing."""

    model: Any
    #: Target tensors (state-dict keys, or ``layer/parameter`` for Keras) that received weights.
    loaded: list[str] = field(default_factory=list)
    #: Archive tensors or layers not loaded, each with the reason.
    skipped: list[str] = field(default_factory=list)
    #: Target tensors or layers that received nothing and keep their own values.
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every archive tensor was loaded and every target tensor received one."""
        return not self.skipped and not self.missing

    def summary(self) -> list[str]:
        """Human-readable lines: counts, then every skipped and missing entry."""
        lines = [f"loaded {len(self.loaded)} tensor(s), skipped {len(self.skipped)}, "
                 f"missing {len(self.missing)}"]
        lines += [f"skipped: {entry}" for entry in self.skipped]
        lines += [f"missing: {entry}" for entry in self.missing]
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary())


@dataclass
class Pairing:
    """Layers paired by order: the pairs that fit, and what did not."""

    pairs: list[tuple[LayerBase, LayerBase]]
    #: Every disagreement, in words (what ``strict=True`` refuses with).
    problems: list[str]
    #: Archive layers left out (with ``strict=False``), each with the reason.
    skipped: list[str]
    #: Target layers with weights that were paired with nothing.
    missing: list[LayerBase]


def with_parameters(layers: list[LayerBase]) -> list[LayerBase]:
    """The layers that hold tensors, in order: the ones ``load_into`` pairs."""
    return [layer for layer in layers if layer.tensor_refs()]


def pair_layers(
    ours: list[LayerBase], theirs: list[LayerBase], *, target: str = "target"
) -> Pairing:
    """Pair parameterised layers by order; return the pairs that fit and every problem.

    Args:
        ours: The archive's layers.
        theirs: The target's layers, as weightio read them from the live model.
        target: How messages name the target ("target", "Keras model").
    """
    ours, theirs = with_parameters(ours), with_parameters(theirs)
    problems: list[str] = []
    skipped: list[str] = []
    if len(ours) != len(theirs):
        problems.append(
            f"the archive has {len(ours)} layers with weights "
            f"({', '.join(layer.name for layer in ours)}), the {target} has {len(theirs)} "
            f"({', '.join(layer.name for layer in theirs)})"
        )
    pairs = []
    for a, t in zip(ours, theirs):
        label = f"archive layer {a.name!r} vs {target} layer {t.name!r}"
        found = _disagreements(a, t, target)
        if found:
            problems += [f"{label}{what}" for what in found]
            skipped.append(f"layer {a.name!r} (paired with {target} layer {t.name!r}):"
                           + ";".join(found))
        else:
            pairs.append((a, t))
    skipped += [f"layer {a.name!r}: the {target} has no layer with weights left to pair it with"
                for a in ours[len(theirs):]]
    paired_targets = {id(t) for _, t in pairs}
    missing = [t for t in theirs if id(t) not in paired_targets]
    return Pairing(pairs, problems, skipped, missing)


def _disagreements(a: LayerBase, t: LayerBase, target: str) -> list[str]:
    if a.kind != t.kind:
        return [f": kind {a.kind} vs {t.kind}"]
    a_refs, t_refs = a.tensor_refs(), t.tensor_refs()
    if set(a_refs) != set(t_refs):
        return [f": parameters {sorted(a_refs)} vs {sorted(t_refs)}"]
    found = []
    for param, ref in a_refs.items():
        other = t_refs[param]
        if tuple(ref.shape) != tuple(other.shape):
            found.append(f" {param}: shape {list(ref.shape)} in the archive, "
                         f"{list(other.shape)} in the {target} (tensors {ref.key!r} and "
                         f"{other.key!r})")
        if ref.dtype != other.dtype:
            found.append(f" {param}: dtype {ref.dtype} in the archive, {other.dtype} in the "
                         f"{target} (weightio never casts; give the {target} the archive's "
                         "dtype first)")
    return found


# -- a bare state dict, by canonical position ---------------------------------------------------

#: State-dict entries that are no weight (torch's batch-norm step counter): never paired.
COUNTERS = ("num_batches_tracked",)


@dataclass
class PositionPairing:
    """A bare state dict's tensors paired with a target's canonical tensors by position."""

    #: ``(state-dict key, target tensor key)`` for every pair that fits.
    pairs: list[tuple[str, str]]
    #: Every disagreement, in words, naming both tensors.
    problems: list[str]
    #: State-dict tensors not loaded, each with the reason.
    skipped: list[str]
    #: Target tensor keys that received nothing.
    missing: list[str]


def pair_by_position(
    source: Any, target: Any, *, source_name: str = "state dict", target_name: str = "target"
) -> PositionPairing:
    """Pair a weights-only archive's tensors with ``target``'s by canonical position.

    A bare state dict has no layer kinds to pair by, but its order is the model's: a PyTorch
    ``state_dict()`` lists each module's parameters in registration order, and weightio's
    canonical order (a live model read into a spec: layers in the order they run, each layer's
    parameters in its ``tensor_refs`` order) is the same for a model of the same architecture
    whose modules are registered in the order they run (always so for ``nn.Sequential``; a
    module that registers its head before its body pairs wrongly, which shapes usually catch), in PyTorch's
    layout (conv ``[out, in, *k]``, dense ``[out, in]``, batch norm ``weight, bias,
    running_mean, running_var``, LSTM ``weight_ih, weight_hh, bias_ih, bias_hh``). So the
    n-th tensor goes to the n-th; every pair must agree on shape and dtype (nothing is cast or
    reshaped), and counters (``num_batches_tracked``) are left out.

    Args:
        source: The weights-only archive (``weightio.read(state_dict)``).
        target: The target model read into a full archive.
        source_name: How messages name the source.
        target_name: How messages name the target ("Keras model").
    """
    theirs = [(layer.name, param, ref) for layer in with_parameters(target.spec.layers)
              for param, ref in layer.tensor_refs().items()]
    ours = [ref for layer in source.spec.layers for param, ref in layer.tensor_refs().items()
            if param not in COUNTERS]
    result = PositionPairing([], [], [], [])
    for position, (ref, (layer, param, other)) in enumerate(zip(ours, theirs)):
        found = []
        if tuple(ref.shape) != tuple(other.shape):
            found.append("shapes differ")
        if ref.dtype != other.dtype:
            found.append(f"dtype {ref.dtype} vs {other.dtype} (weightio never casts)")
        if found:
            result.problems.append(
                f"tensor {position}: {source_name} {ref.key!r} {list(ref.shape)} {ref.dtype} vs "
                f"{target_name} {layer}/{param} {list(other.shape)} {other.dtype}: "
                + ", ".join(found)
            )
            result.skipped.append(f"tensor {ref.key!r}: does not fit {layer}/{param} "
                                  f"({', '.join(found)})")
            result.missing.append(other.key)
        else:
            result.pairs.append((ref.key, other.key))
    if len(ours) != len(theirs):
        result.problems.append(
            f"the {source_name} has {len(ours)} tensors (leaving out counters), the {target_name} "
            f"{len(theirs)}; first unpaired: "
            + (repr(ours[len(theirs)].key) if len(ours) > len(theirs)
               else f"{theirs[len(ours)][0]}/{theirs[len(ours)][1]}")
        )
    result.skipped += [f"tensor {ref.key!r}: the {target_name} has no tensor left to pair it with"
                       for ref in ours[len(theirs):]]
    result.missing += [other.key for _, _, other in theirs[len(ours):]]
    return result
