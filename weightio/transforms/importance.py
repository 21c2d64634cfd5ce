"""``importance``: what the first layer listens to, read off its weights.

The first conv or dense layer the model input reaches (in a weights-only archive: the first
tensor named ``weight`` of two or more axes) gives each input a share of its absolute weights:

* dense ``W [units, in]``: ``importance[j] = Σ_i |W[i, j]| / Σ |W|``, one per input feature;
  when the input is an image flattened into the dense layer, each feature is a pixel of a
  channel (in the flatten's order), so the shares make one heat map per channel;
* conv ``W [out, in / groups, *kernel]``: one share per input channel (its kernel weights over
  every filter that reads it), and per kernel position a map of where in the window it looks.

Meaningful when the inputs share a scale (standardised features, pixels): it ranks inputs by
the size of the weights they meet, not by their effect on a particular output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive

__all__ = ["Importance", "first_layer_importance"]


@dataclass
class Importance:
    """Shares of the first layer's absolute weights per input (they sum to 1)."""

    layer: str
    kind: str
    scores: list[float]
    labels: list[str]
    #: ``(channels, height, width, order)`` when a dense layer reads a flattened image.
    image: tuple[int, int, int, str] | None = None
    #: conv only: per input channel, the share of each kernel position (``[in, *kernel]``).
    kernel_maps: list[Any] = field(default_factory=list)

    def ranked(self, top: int | None = None) -> list[tuple[int, str, float]]:
        """``(rank, label, share)``, largest share first (ties: input order)."""
        order = sorted(range(len(self.scores)), key=lambda j: (-self.scores[j], j))
        chosen = order if top is None else order[:top]
        return [(rank + 1, self.labels[j], self.scores[j]) for rank, j in enumerate(chosen)]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """The ranking for machines."""
        return {"layer": self.layer, "kind": self.kind, "inputs": len(self.scores),
                "ranking": [{"rank": r, "input": label, "share": share} for r, label, share in self.ranked(top)]}

    def table(self, top: int | None = 20) -> list[str]:
        """The ranking as text lines."""
        unit = "input channel" if self.kind == "conv" else "input feature"
        head = [f"importance of each {unit} to {self.kind} layer {self.layer!r} (share of Σ|W|)",
                f"{'rank':>5}  {'input':<24} share"]
        rows = [f"{r:>5}  {label:<24} {share:.4f}" for r, label, share in self.ranked(top)]
        more = [] if top is None or top >= len(self.scores) else [f"  … {len(self.scores) - top} more"]
        return head + rows + more


def _first_weighted(archive: Archive) -> tuple[Any, Any]:
    spec = archive.spec
    if spec.weights_only:
        for layer in spec.layers:
            ref = layer.tensor_refs().get("weight")
            if ref is not None and len(ref.shape) >= 2:
                return layer, ref
    else:
        for index in spec.topological_order():
            layer = spec.layers[index]
            if layer.kind in ("dense", "conv"):
                return layer, layer.tensor_refs()["weight"]
    raise UnsupportedLayerError(
        "no dense or conv layer (or weight tensor of two or more axes) to read importance from"
    )


def first_layer_importance(archive: Archive) -> Importance:
    """The shares of the first dense/conv layer's absolute weights per input."""
    layer, ref = _first_weighted(archive)
    weight = np.abs(np.asarray(archive.tensors[ref.key], dtype=np.float64))
    weight = np.where(np.isfinite(weight), weight, 0.0)
    total = float(weight.sum()) or 1.0
    if weight.ndim == 2:
        scores = weight.sum(axis=0) / total
        image = image_shape(archive, scores.size)
        return Importance(layer.name, "dense", [float(v) for v in scores], _labels(scores.size, image), image)
    groups = getattr(layer, "groups", 1)
    out, per_group = weight.shape[0], weight.shape[1]
    channels = per_group * groups
    maps = np.zeros((channels, *weight.shape[2:]))
    step = out // groups
    for g in range(groups):
        maps[g * per_group:(g + 1) * per_group] = weight[g * step:(g + 1) * step].sum(axis=0)
    maps /= total
    scores = maps.reshape(channels, -1).sum(axis=1)
    return Importance(layer.name, "conv", [float(v) for v in scores], [f"channel {c}" for c in range(channels)],
                      kernel_maps=[m for m in maps])


def image_shape(archive: Archive, features: int) -> tuple[int, int, int, str] | None:
    """``(channels, height, width, flatten order)`` when the first dense layer reads a flattened
    image (an input of 2 or 3 axes whose size is its input count), else ``None``. A plain
    ``[H, W, C]`` input read from Keras (``features_last``) was flattened in Keras's order.
    Used by ``weightio importance`` and by ``plot``'s importance chart alike.
    """
    spec = archive.spec
    if spec.weights_only or len(spec.inputs) != 1:
        return None
    shape = spec.inputs[0].shape
    if any(d is None for d in shape) or math.prod(shape) != features or len(shape) not in (2, 3):
        return None
    order = next((getattr(other, "order", "channels_first") for other in spec.layers
                  if other.kind == "flatten"), "channels_first")
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1]), "channels_first"
    if spec.inputs[0].layout == "features_last":  # plain data [H, W, C], flattened in C order
        return int(shape[2]), int(shape[0]), int(shape[1]), "channels_last"
    return int(shape[0]), int(shape[1]), int(shape[2]), str(order)  # a feature map [C, H, W]


def _labels(features: int, image: tuple[int, int, int, str] | None) -> list[str]:
    if image is None:
        return [f"feature {j}" for j in range(features)]
    channels, height, width, order = image
    labels = []
    for j in range(features):
        if order == "channels_last":
            c, pixel = j % channels, j // channels
        else:
            c, pixel = j // (height * width), j % (height * width)
        where = f"pixel ({pixel // width}, {pixel % width})"
        labels.append(where if channels == 1 else f"{where} ch {c}")
    return labels
