"""A spec layer's parameters as Keras holds them: ``layer.weights`` names, paths and shapes.

weightio keeps every parameter in one canonical layout (PyTorch's names and shapes). Keras
holds the same numbers otherwise: ``kernel [in, out]``, ``recurrent_kernel``, one LSTM bias
where PyTorch has ``bias_ih`` and ``bias_hh``, ``gamma``/``moving_mean`` for a batch norm. The
shapes and the number of arrays come from the same mapping that writes the layer into a Keras
model (``KERAS_WRITE``, which ``load_into`` uses too), run on stand-in arrays of zeros that
take no memory, so nothing is read from the archive. The names come from ``WEIGHT_NAMES``:
Keras' names for each class's weights, in ``layer.weights`` order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from weightio.format.archive import Archive, TensorMap
from weightio.frameworks.common import NativeTensor
from weightio.frameworks.keras.write.base import (
    KERAS_WRITE,
    KerasLayer,
    KerasSettings,
    NameAllocator,
    VariableGroup,
    WriteContext,
)
from weightio.frameworks.keras.write.bridge import input_form, prepare, spec_ranks, spec_tags
from weightio.layouts.flow import PLAIN
from weightio.layouts.transforms import conv_weight_to_keras
from weightio.spec.activations import LINEAR, ActivationFn
from weightio.spec.base import LayerBase
from weightio.spec.dtypes import numpy_dtype

_KERNEL_BIAS = ("kernel", "bias")
_RECURRENT = ("kernel", "recurrent_kernel", "bias")

#: Keras' names of each class's weights, in ``layer.weights`` order (optional ones last, so a
#: layer without them keeps a prefix). Batch/layer/group norms depend on ``scale``/``center``.
WEIGHT_NAMES: dict[str, tuple[str, ...]] = {
    "Dense": _KERNEL_BIAS,
    "EinsumDense": _KERNEL_BIAS,
    **{f"Conv{n}D": _KERNEL_BIAS for n in (1, 2, 3)},
    **{f"Conv{n}DTranspose": _KERNEL_BIAS for n in (1, 2, 3)},
    **{f"DepthwiseConv{n}D": _KERNEL_BIAS for n in (1, 2)},  # Keras 3: not depthwise_kernel
    **{f"SeparableConv{n}D": ("depthwise_kernel", "pointwise_kernel", "bias") for n in (1, 2)},
    "Embedding": ("embeddings",),
    "SimpleRNN": _RECURRENT,
    "LSTM": _RECURRENT,
    "GRU": _RECURRENT,
    "Bidirectional": _RECURRENT,  # each direction's cell
    "MultiHeadAttention": _KERNEL_BIAS,  # each of query, key, value, attention_output
    "PReLU": ("alpha",),
    "Normalization": ("mean", "variance", "count"),
}
_NORMS = ("BatchNormalization", "LayerNormalization", "GroupNormalization")

#: Keras weights that are not trainable (statistics), counted apart as ``summary()`` does.
NON_TRAINABLE = frozenset({"moving_mean", "moving_variance", "mean", "variance", "count"})


def _names(mapped: KerasLayer) -> tuple[str, ...]:
    if mapped.class_name in _NORMS:
        config = mapped.config
        optional = [n for n, on in (("gamma", config.get("scale", True)),
                                    ("beta", config.get("center", True))) if on]
        stats = ("moving_mean", "moving_variance") if mapped.class_name == "BatchNormalization" else ()
        return (*optional, *stats)
    return WEIGHT_NAMES.get(mapped.class_name, ())


def _stand_in(archive: Archive) -> Archive:
    """The archive with every tensor a broadcast zero of its shape: no bytes read or held."""
    refs = {ref.key: ref for _, _, ref in archive.spec.tensor_refs()}
    zeros = {key: np.zeros((), numpy_dtype(ref.dtype)) for key, ref in refs.items()}
    tensors = TensorMap(list(refs), lambda key: np.broadcast_to(zeros[key], tuple(refs[key].shape)))
    return Archive(archive.spec, tensors, path=archive.path, checked=True)


def weights_only_form(layer: LayerBase) -> LayerBase:
    """``layer`` with the settings that shape a built model but not its weights made plain.

    A fused activation Keras has no exact string for, or a time-major RNN, would make the
    mapping refuse to build a layer whose weights are still what they are.
    """
    update: dict[str, Any] = {}
    if isinstance(getattr(layer, "activation", None), ActivationFn) and layer.kind != "activation":
        update["activation"] = LINEAR
    if getattr(layer, "batch_first", True) is False:
        update["batch_first"] = True
    return layer.model_copy(update=update) if update else layer


def keras_layers_of(
    archive: Archive, layer: LayerBase, settings: KerasSettings | None = None
) -> list[KerasLayer]:
    """The Keras layers with weights that the mapping writes for one spec layer.

    Only the rank of the input matters to the weights, so the mapping sees free dimensions.

    Raises:
        UnsupportedLayerError: the layer has no Keras mapping.
    """
    layer = weights_only_form(layer)
    names = NameAllocator()
    names.reserve(layer.name)
    spec = archive.spec
    index = next(i for i, other in enumerate(spec.layers) if other.name == layer.name)
    source = spec.layer_inputs(index)[0]
    rank = spec_ranks(spec).get(source) or int(getattr(layer, "rank", 0)) + 2
    ctx = WriteContext(
        archive, "float32", names, [(None,) * (rank - 1)],
        layout=input_form(layer, spec_tags(spec).get(source, PLAIN)), settings=settings or KerasSettings(),
    )
    return [k for k in KERAS_WRITE.lookup(layer.kind, layer=layer.name)(layer, ctx) if k.weights]


def _leaves(group: VariableGroup, prefix: str) -> list[tuple[str, tuple[int, ...]]]:
    """(path of the group, its array indices), depth first in ``layer.weights`` order."""
    path = f"{prefix}/{group.name}" if prefix else group.name
    found = [(path, group.arrays)] if group.arrays else []
    for _, child in group.children:
        found += _leaves(child, path)
    return found


def _native(mapped: KerasLayer) -> list[NativeTensor]:
    names = _names(mapped)
    out = []
    for path, indices in _leaves(mapped.variables(), ""):
        for position, index in enumerate(indices):
            array = mapped.weights[index]
            name = names[position] if position < len(names) else f"weight_{position}"
            out.append(NativeTensor(
                name, f"{path}/{name}", tuple(int(n) for n in array.shape), _dtype(array),
                "buffer" if name in NON_TRAINABLE else "trainable", mapped.class_name,
            ))
    return out


def _as_read(archive: Archive, layer: LayerBase, mapped: KerasLayer) -> KerasLayer:
    """A ``Conv*D(groups=in)`` reads as the same spec as a ``DepthwiseConv*D``; the class it
    was read from holds the grouped kernel instead (as ``load_into`` gives it).
    """
    read_as = (layer.source_class or "").rsplit(".", 1)[-1]
    if not (mapped.class_name.startswith("DepthwiseConv") and read_as.startswith("Conv")):
        return mapped
    kernel = conv_weight_to_keras(np.asarray(archive.tensors[layer.weight.key]))  # type: ignore[attr-defined]
    return replace(mapped, class_name=read_as, weights=[kernel, *mapped.weights[1:]])


def _dtype(array: np.ndarray) -> str:
    from weightio.spec.dtypes import dtype_name

    return dtype_name(array.dtype)


def keras_native_tensors(archive: Archive) -> dict[str, list[NativeTensor]]:
    """Every spec layer with parameters, as Keras holds them: names, paths, shapes, dtypes.

    Opaque layers (a class weightio has no mapping for) keep Keras' order, under their
    canonical names (``var_0``…).

    Raises:
        UnsupportedLayerError: a layer with no Keras mapping, named.
    """
    archive = _stand_in(prepare(_stand_in(archive)))
    out: dict[str, list[NativeTensor]] = {}
    for layer in archive.spec.layers:
        refs = layer.tensor_refs()
        if not refs:
            continue
        if layer.kind == "opaque":
            out[layer.name] = [NativeTensor(param, f"{layer.name}/{param}", tuple(ref.shape), ref.dtype,
                                            layer.parameter_role(param), layer.source_class)
                               for param, ref in refs.items()]
            continue
        out[layer.name] = [t for mapped in keras_layers_of(archive, layer)
                           for t in _native(_as_read(archive, layer, mapped))]
    return out
