"""``weight_norm``: dense and conv weights in weight-norm form, the reverse of ``fold``'s.

Each selected weight ``w`` (canonical ``[out, in, *kernel]``) is stored as its direction
``v = w`` and magnitude ``g = ||w||`` over every axis but the output axis (torch's
``weight_norm(dim=0)``), computed in float64 and stored in the weight's dtype: the encoded
parameter of scheme ``weight_norm`` (format 1.2, docs/format.md), ``value = g * v / ||v||``.
That is what torch's ``parametrizations.weight_norm`` starts from, so the torch writer builds
the layer with it (state-dict keys ``parametrizations.weight.original0`` / ``original1``);
the runtime and the other writers decode the same ``g * v / ||v||`` and compute the plain
model's numbers up to one rounding of the weight. ``fold`` (or ``plain``) turns it back into
plain weights. A weight of zeros has no direction and is left plain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.format.encoding import decode
from weightio.spec.tensors import TensorEncoding, TensorRef
from weightio.transforms.measure import TransformResult, finish
from weightio.transforms.prune import select

__all__ = ["WEIGHT_NORM_KINDS", "weight_norm_archive"]

#: The kinds whose weight goes into weight-norm form (torch's Linear and Conv1d/2d/3d).
WEIGHT_NORM_KINDS = ("dense", "conv")


def weight_norm_archive(
    archive: Archive,
    *,
    include: Any = None,
    exclude: Any = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
) -> TransformResult:
    """Put the selected dense/conv weights of ``archive`` in weight-norm form (see the module's
    docstring); measured against it.

    Raises:
        UnsupportedLayerError: the archive holds weights only (its layers have no kind to say
            which tensors are Linear/Conv weights).
    """
    if archive.spec.weights_only:
        raise UnsupportedLayerError(
            "weight-norm form needs the architecture (which tensors are dense/conv weights); this "
            "archive holds weights only. Read the model itself, not its state dict"
        )
    stored = {key: np.asarray(archive.stored[key]) for key in archive.stored}
    encodings: dict[str, TensorEncoding] = {}
    rows = []
    for layer in select(archive, include, exclude, WEIGHT_NORM_KINDS):
        if layer.kind not in WEIGHT_NORM_KINDS:
            continue
        ref = layer.weight
        if ref.encoding is not None or ref.dtype not in ("F16", "BF16", "F32", "F64"):
            continue
        weight = np.asarray(archive.tensors[ref.key])
        w64 = weight.astype(np.float64)
        g = np.sqrt(np.sum(w64 * w64, axis=tuple(range(1, w64.ndim)))).astype(weight.dtype)
        if not np.all(g > 0):
            continue
        encoding = TensorEncoding(
            scheme="weight_norm", stored_dtype=ref.dtype, axis=0,
            scale=TensorRef(key=f"{ref.key}.g", shape=g.shape, dtype=ref.dtype),
        )
        stored[encoding.scale.key] = g
        encodings[ref.key] = encoding
        decoded = decode(ref.model_copy(update={"encoding": encoding}), stored)
        rows.append({"layer": layer.name, "tensor": ref.key, "g": encoding.scale.key,
                     "worst_weight_error": float(np.max(np.abs(decoded.astype(np.float64) - w64), initial=0.0))})
    data = archive.spec.model_dump(mode="json")
    for layer in data["layers"]:
        weight_ref = layer.get("weight")
        if isinstance(weight_ref, dict) and weight_ref.get("key") in encodings:
            weight_ref["encoding"] = encodings[weight_ref["key"]].model_dump(mode="json")
    line = (f"weight_norm: {len(rows)} dense/conv weight(s) stored as g, v (w = g * v / ||v||, "
            "norm over all axes but the output axis)")
    return finish("weight_norm", archive, data, stored, [line], layers=rows,
                  notes=[line.split(": ", 1)[1]], seed=seed, samples=samples, max_change=max_change)
