"""Shared tensors in the Keras writer: one Keras layer object called at every place a spec layer
is called again, and a named warning where Keras cannot hold the tie.

Keras-free. A spec layer reads the same tensors as an earlier one, is of the same kind and has
the same hyper-parameters (a torch module called twice, a Keras layer's ``<layer>__call<k>``):
it is a further *call* of that layer, so ``calls_of`` pairs it with the first, and the assembly
calls the first call's Keras layer again instead of making a second one (one set of variables,
stored once in ``model.weights.h5``, read back by ``read.shared`` as the same sharing). A tensor
read by layers that are not calls of one layer (an LM head tied to its embedding: a Keras
``Dense`` kernel is ``[in, out]``, the embedding ``[vocab, dim]``, its transpose) cannot be one
Keras variable without a custom layer, which a ``.keras`` file would then need weightio to load;
those layers get their own copy and ``UntiedWeightsWarning`` says which (docs/conventions.md,
"Shared layers").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from weightio.frameworks.keras.write.base import KerasLayer
from weightio.spec.base import LayerBase
from weightio.spec.model import ModelSpec

#: Fields that say where a layer sits, not what it computes: calls of one layer may differ in them.
_PLACE = {"name", "inputs", "source_class"}


class UntiedWeightsWarning(UserWarning):
    """A tensor the archive shares between layers is written as separate Keras variables."""


def _computes(layer: LayerBase) -> dict:
    return layer.model_dump(mode="json", exclude=_PLACE)


def calls_of(spec: ModelSpec) -> dict[str, str]:
    """``{spec layer: the earlier spec layer it is a further call of}``.

    A further call reads the same tensor refs (at least one), parameter for parameter, and is
    the same kind with the same configuration. Layers are paired in topological order (the order
    the assembly writes them), each with the first layer it repeats.
    """
    firsts: dict[tuple, str] = {}
    calls: dict[str, str] = {}
    for layer in (spec.layers[i] for i in spec.topological_order()):  # the order layers are written
        refs = layer.tensor_refs()
        if not refs:
            continue
        key = (layer.kind, tuple((p, r.key) for p, r in refs.items()))
        first = firsts.get(key)
        if first is not None and _computes(spec.layer(first)) == _computes(layer):
            calls[layer.name] = first
        else:
            firsts.setdefault(key, layer.name)
    return calls


def same_layer(copy: KerasLayer, first: KerasLayer) -> bool:
    """Whether ``copy`` is what calling ``first`` again computes: the same class, config (but
    the name), call style and arrays.
    """
    if (copy.class_name, copy.module, copy.call, copy.call_kwargs, copy.call_args, copy.nested) != (
        first.class_name, first.module, first.call, first.call_kwargs, first.call_args, first.nested
    ):
        return False
    mine = {k: v for k, v in copy.config.items() if k != "name"}
    theirs = {k: v for k, v in first.config.items() if k != "name"}
    if mine != theirs or len(copy.weights) != len(first.weights):
        return False
    # The same tensors, unless a mapping rewrote them per call (a Dense folding its Flatten's order).
    return all(a is b or (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b))
               for a, b in zip(copy.weights, first.weights))


def reused_layers(copy: Sequence[KerasLayer], first: Sequence[KerasLayer]) -> list[KerasLayer | None]:
    """For each Keras layer written for a further call: the first call's layer to call again
    (those holding arrays), or None to keep the new one (parameter-free ones: an activation or a
    permute). Empty when the two calls were not written alike (then nothing is reused).
    """
    if len(copy) != len(first):
        return []
    out: list[KerasLayer | None] = []
    for mine, theirs in zip(copy, first):
        if not theirs.weights:
            out.append(None)
        elif same_layer(mine, theirs):
            out.append(theirs)
        else:
            return []
    return out


def warn_untied(spec: ModelSpec, tied: set[str]) -> None:
    """Warn once per shared tensor whose readers are not all one Keras layer (``tied``: the
    spec layers written as further calls).
    """
    readers: dict[str, list[str]] = {}
    for layer, _param, ref in spec.tensor_refs():
        names = readers.setdefault(ref.key, [])
        if layer.name not in names:
            names.append(layer.name)
    for key, layers in readers.items():
        separate = [name for name in layers if name not in tied]
        if len(separate) > 1:
            warnings.warn(
                f"tensor {key!r} is shared by layers {', '.join(separate)}, which are not calls of "
                "one Keras layer (e.g. an embedding tied to an output projection, whose Keras "
                "kernel is the transpose); the Keras model gets a copy per layer and no longer "
                "ties them",
                UntiedWeightsWarning, stacklevel=3,
            )
