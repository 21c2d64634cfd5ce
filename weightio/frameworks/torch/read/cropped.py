"""A pooling followed by a crop reads as one pooling with less padding.

torch pads both sides of a pooling window alike, so the torch writer builds Keras's ``"same"``
pooling with uneven padding (``AveragePooling1D(2, padding="same")`` pads 0 before, 1 after) as
the pooling padded evenly, then a crop of the outputs the even padding added
(``AvgPool1d(2, padding=1)`` + ``ZeroPad1d((-1, 0))``). Cropping ``c`` outputs at one end of a
pooling with stride ``s`` is that pooling with ``c * s`` less padding there: the same windows,
so the same numbers, whatever the op and ``count_include_pad``. Folding it back gives the layer
the user had, and one the Keras writer can build (an average that excludes uneven padding has
no Keras form as pooling plus crop, but is Keras's ``"same"``).
"""

from __future__ import annotations

from weightio.spec.base import LayerBase
from weightio.spec.model import OutputSpec


def fold_cropped_pools(
    layers: list[LayerBase], outputs: list[OutputSpec]
) -> tuple[list[LayerBase], list[OutputSpec]]:
    """``layers`` with each explicitly padded pooling read only by a crop merged with it."""
    readers: dict[str, list[str]] = {}
    for layer in layers:
        for source in layer.inputs or []:
            readers.setdefault(source, []).append(layer.name)
    returned = {out.layer for out in outputs}
    by_name = {layer.name: layer for layer in layers}
    folded: dict[str, LayerBase] = {}  # crop name -> the pooling that replaces it
    for layer in layers:
        crop = _crop_of(layer, readers, by_name, returned)
        if crop is None:
            continue
        pads = []
        for (before, after), (cut_before, cut_after), stride in zip(
                layer.padding, crop.padding, layer.strides):  # type: ignore[attr-defined]
            pads.append((before + cut_before * stride, after + cut_after * stride))
        if any(p < 0 for pair in pads for p in pair):
            continue
        folded[crop.name] = layer.model_copy(update={"padding": tuple(pads)})
    if not folded:
        return layers, outputs
    gone = {pool.name for pool in folded.values()}
    rename = {crop: pool.name for crop, pool in folded.items()}
    result = []
    for layer in layers:
        if layer.name in gone:
            continue
        layer = folded.get(layer.name, layer)
        if layer.inputs is not None:
            layer = layer.model_copy(update={"inputs": [rename.get(s, s) for s in layer.inputs]})
        result.append(layer)
    outs = [out.model_copy(update={"layer": rename.get(out.layer, out.layer)}) for out in outputs]
    return result, outs


def _crop_of(layer: LayerBase, readers: dict[str, list[str]], by_name: dict[str, LayerBase],
             returned: set[str]) -> LayerBase | None:
    """The crop that alone reads ``layer``, when ``layer`` is an explicitly padded pooling."""
    if layer.kind != "pool" or isinstance(layer.padding, str):  # type: ignore[attr-defined]
        return None
    read_by = readers.get(layer.name, [])
    if len(read_by) != 1 or layer.name in returned:
        return None
    crop = by_name[read_by[0]]
    if (crop.kind != "zero_padding" or crop.rank != layer.rank  # type: ignore[attr-defined]
            or any(v > 0 for pair in crop.padding for v in pair)):  # type: ignore[attr-defined]
        return None
    return crop
