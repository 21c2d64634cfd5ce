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

With probe-input gradients (``gradient_importance``, ``weightio importance --gradients``) each
input element instead gets ``mean over probes of |∂f/∂x_j|``, the share of their sum, where
``f`` is the output of the model's first output at the top class of the unperturbed probe
(for an output of shape ``[batch, classes]``), else the sum of that output's values. The
probes are the seeded standard-normal inputs every proof uses (``weightio.runtime.probes``).
The numpy runtime has no autodiff, so ``∂f/∂x_j`` is a central difference
``(f(x + h e_j) - f(x - h e_j)) / 2h`` computed through the runtime in float64 (``h`` =
1e-6): every perturbed input of a chunk of probes runs in one batch. Its error is
``O(h²)`` from the curvature (1e-12) plus ``O(1e-16 |f| / h)`` from rounding (1e-10 |f|),
except where a ReLU (or max pool) switches within ``h`` of the probe, which a standard-normal
probe meets with probability of order ``h`` per unit: at ``h`` = 1e-5 one pixel of a 28×28
two-conv ReLU CNN was 0.7% off torch's autograd (of the largest gradient), at 1e-6 the worst
was 7e-9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.runtime.forward import forward
from weightio.runtime.probes import probe_inputs

__all__ = ["GRADIENT_STEP", "Importance", "feature_labels", "first_layer_importance", "gradient_importance"]

#: The central difference's step ``h`` (inputs are standard normal: ``h`` ≪ their scale).
GRADIENT_STEP = 1e-6
#: Perturbed inputs run per batch (bounds the forward pass's memory: it keeps every layer).
_ROWS_PER_BATCH = 2048


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
    #: ``"weights"`` (shares of the first layer's Σ|W|) or ``"gradients"`` (shares of the mean
    #: |∂f/∂x| over probe inputs; ``layer`` is then the output the gradient is of).
    method: str = "weights"
    #: gradients only: the mean |∂f/∂x_j| per input element, before normalising to shares.
    mean_abs_gradients: list[float] = field(default_factory=list)
    #: gradients only: what ``f`` is, and the probes (``seed``, ``samples``).
    objective: str = ""

    def ranked(self, top: int | None = None) -> list[tuple[int, str, float]]:
        """``(rank, label, share)``, largest share first (ties: input order)."""
        order = sorted(range(len(self.scores)), key=lambda j: (-self.scores[j], j))
        chosen = order if top is None else order[:top]
        return [(rank + 1, self.labels[j], self.scores[j]) for rank, j in enumerate(chosen)]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """The ranking for machines."""
        data: dict[str, Any] = {"layer": self.layer, "kind": self.kind, "method": self.method,
                                "inputs": len(self.scores)}
        ranking = [{"rank": r, "input": label, "share": share} for r, label, share in self.ranked(top)]
        if self.method == "gradients":
            data["objective"] = self.objective
            index = {label: j for j, label in enumerate(self.labels)}
            for row in ranking:
                row["mean_abs_gradient"] = self.mean_abs_gradients[index[row["input"]]]
        data["ranking"] = ranking
        return data

    def table(self, top: int | None = 20) -> list[str]:
        """The ranking as text lines."""
        if self.method == "gradients":
            head = [f"importance of each input element by probe gradients: {self.objective} "
                    "(share of mean |∂f/∂x|)", f"{'rank':>5}  {'input':<24} share"]
            rows = [f"{r:>5}  {label:<24} {share:.4f}" for r, label, share in self.ranked(top)]
            more = [] if top is None or top >= len(self.scores) else [f"  … {len(self.scores) - top} more"]
            return head + rows + more
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
        return Importance(layer.name, "dense", [float(v) for v in scores], feature_labels(scores.size, image), image)
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


def feature_labels(features: int, image: tuple[int, int, int, str] | None) -> list[str]:
    """``feature j`` for plain inputs, else the pixel (and channel) of each element of a
    flattened image in ``image``'s order.
    """
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


def gradient_importance(archive: Archive, *, seed: int = 0, samples: int = 8) -> Importance:
    """Rank the input elements by the mean |∂f/∂x| over seeded probes (see the module's
    docstring: ``f`` and the central difference).

    Raises:
        UnsupportedLayerError: the archive holds weights only, or its model takes several
            inputs or a non-float (token id) input, where an input gradient means nothing.
    """
    spec = archive.spec
    if spec.weights_only:
        raise UnsupportedLayerError("probe gradients need the architecture to run; this archive holds weights only")
    if len(spec.inputs) != 1 or not spec.inputs[0].dtype.startswith(("F", "BF")):
        raise UnsupportedLayerError(
            "probe gradients rank the elements of one float input; this model takes "
            + ", ".join(f"{i.name} ({i.dtype})" for i in spec.inputs)
        )
    probe = np.asarray(probe_inputs(spec, seed=seed, samples=samples)[0], dtype=np.float64)
    features = math.prod(probe.shape[1:])
    base = _objective_outputs(archive, probe)
    top = np.argmax(base, axis=1) if base.ndim == 2 and base.shape[1] >= 2 else None
    step = GRADIENT_STEP
    signs = np.concatenate([np.eye(features), -np.eye(features)]) * step  # [2F, F]
    per_chunk = max(1, _ROWS_PER_BATCH // (2 * features))
    gradients = np.empty((probe.shape[0], features))
    for start in range(0, probe.shape[0], per_chunk):
        chunk = probe[start:start + per_chunk].reshape(-1, 1, features)
        moved = (chunk + signs[None]).reshape(-1, *probe.shape[1:])  # [n * 2F, *input]
        out = _objective_outputs(archive, moved).reshape(chunk.shape[0], 2 * features, -1)
        if top is None:
            value = out.reshape(chunk.shape[0], 2 * features, -1).sum(axis=2)
        else:
            picked = top[start:start + chunk.shape[0]]
            value = out[np.arange(chunk.shape[0]), :, picked]
        gradients[start:start + chunk.shape[0]] = (value[:, :features] - value[:, features:]) / (2 * step)
    mean_abs = np.mean(np.abs(gradients), axis=0)
    total = float(mean_abs.sum()) or 1.0
    image = _input_image(spec)
    output = spec.outputs[0].layer
    what = (f"f = output {output!r} at the top class of each probe" if top is not None
            else f"f = the sum of output {output!r}")
    return Importance(
        output, "gradients", [float(v) for v in mean_abs / total], feature_labels(features, image), image,
        method="gradients", mean_abs_gradients=[float(v) for v in mean_abs],
        objective=f"{what}, over {probe.shape[0]} seeded probes (seed {seed}), central differences in float64",
    )


def _objective_outputs(archive: Archive, x: np.ndarray) -> np.ndarray:
    """The first output in float64 (the runtime computes in float64; ``run`` would round it
    to the model's dtype), flattened to ``[batch, values]`` unless it is ``[batch, classes]``.
    """
    outputs, _ = forward(archive, x)
    out = np.asarray(outputs[0], dtype=np.float64)
    return out if out.ndim == 2 else out.reshape(out.shape[0], -1)


def _input_image(spec: Any) -> tuple[int, int, int, str] | None:
    """``(channels, height, width, order)`` of the input's elements, in the canonical layout
    the runtime takes: a feature map ``[C, H, W]``, plain ``[H, W, C]`` data, or ``[H, W]``.
    """
    shape = spec.inputs[0].shape
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1]), "channels_first"
    if len(shape) != 3:
        return None
    if spec.inputs[0].layout == "features_last":
        return int(shape[2]), int(shape[0]), int(shape[1]), "channels_last"
    return int(shape[0]), int(shape[1]), int(shape[2]), "channels_first"
