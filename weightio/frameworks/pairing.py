"""Pairing an archive's layers with a live model's, for ``load_into``, the same way everywhere.

A live target (``nn.Module``, ``keras.Model``) is first read into a spec of its own; its layers
with parameters are then paired with the archive's *by order*, because a model read from another
framework has other layer names. A pair must agree on kind, parameter names, shapes and dtypes
(nothing is ever cast). Every disagreement is collected, so the user sees them all at once.
"""

from __future__ import annotations

from weightio.spec.base import LayerBase


def with_parameters(layers: list[LayerBase]) -> list[LayerBase]:
    """The layers that hold tensors, in order: the ones ``load_into`` pairs."""
    return [layer for layer in layers if layer.tensor_refs()]


def pair_layers(
    ours: list[LayerBase], theirs: list[LayerBase], *, target: str = "target"
) -> tuple[list[tuple[LayerBase, LayerBase]], list[str]]:
    """Pair parameterised layers by order; return the pairs that fit and every problem.

    Args:
        ours: The archive's layers.
        theirs: The target's layers, as weightio read them from the live model.
        target: How messages name the target ("target", "Keras model").
    """
    ours, theirs = with_parameters(ours), with_parameters(theirs)
    problems: list[str] = []
    if len(ours) != len(theirs):
        problems.append(
            f"the archive has {len(ours)} layers with weights "
            f"({', '.join(layer.name for layer in ours)}), the {target} has {len(theirs)} "
            f"({', '.join(layer.name for layer in theirs)})"
        )
    pairs = []
    for a, t in zip(ours, theirs):
        label = f"archive layer {a.name!r} vs {target} layer {t.name!r}"
        if a.kind != t.kind:
            problems.append(f"{label}: kind {a.kind} vs {t.kind}")
            continue
        a_refs, t_refs = a.tensor_refs(), t.tensor_refs()
        if set(a_refs) != set(t_refs):
            problems.append(f"{label}: parameters {sorted(a_refs)} vs {sorted(t_refs)}")
            continue
        fits = True
        for param, ref in a_refs.items():
            other = t_refs[param]
            if tuple(ref.shape) != tuple(other.shape):
                problems.append(
                    f"{label} {param}: shape {list(ref.shape)} in the archive, "
                    f"{list(other.shape)} in the {target}"
                )
                fits = False
            if ref.dtype != other.dtype:
                problems.append(
                    f"{label} {param}: dtype {ref.dtype} in the archive, {other.dtype} in the "
                    f"{target} (weightio never casts; give the {target} the archive's dtype first)"
                )
                fits = False
        if fits:
            pairs.append((a, t))
    return pairs, problems
