"""``quantize``: weights stored in 8 bits, as an encoded parameter (format 1.2, docs/format.md).

Each selected weight (conv, dense: by default every one; biases and norms stay float) becomes
``q`` plus a float32 ``scale`` (and, asymmetric, an int8 ``zero_point``), per tensor or per
output channel (axis 0 of the canonical weight; 1 for a transposed convolution):

* ``int8``, symmetric: ``scale = max|w| / 127``, ``q = clip(round(w / scale), -127, 127)``;
* ``int8``, asymmetric: ``lo = min(w, 0)``, ``hi = max(w, 0)``, ``scale = (hi - lo) / 255``,
  ``zero_point = clip(round(-128 - lo / scale), -128, 127)``,
  ``q = clip(round(w / scale) + zero_point, -128, 127)``;
* ``float8_e4m3`` / ``float8_e5m2``: ``scale = max|w| / 448`` (57344 for e5m2), ``q = w / scale``
  rounded to the float8 format.

``q`` is computed with the float32 scale that is stored, so decoding (``weightio.format.encoding``)
gives the nearest representable value; a channel of zeros gets scale 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from weightio.errors import InvalidInputError
from weightio.format.archive import Archive
from weightio.format.encoding import decode
from weightio.spec.dtypes import itemsize, numpy_dtype
from weightio.spec.tensors import TensorEncoding, TensorRef
from weightio.transforms.measure import TransformResult, finish
from weightio.transforms.prune import PRUNABLE, select

__all__ = ["SCHEMES", "check_quantize_options", "quantize_archive"]

#: Scheme -> (stored dtype, largest magnitude of q).
SCHEMES = {"int8": ("I8", 127.0), "float8_e4m3": ("F8_E4M3", 448.0), "float8_e5m2": ("F8_E5M2", 57344.0)}
_WEIGHTS = ("weight", "depthwise_weight", "pointwise_weight")


def check_quantize_options(scheme: str, symmetric: bool) -> None:
    """Refuse an unknown scheme, or an asymmetric float8 (float8 has no zero point)."""
    if scheme not in SCHEMES:
        raise InvalidInputError(
            f"dtype must be one of {', '.join(SCHEMES)}. Received: dtype={scheme!r}"
        )
    if not symmetric and scheme != "int8":
        raise InvalidInputError(f"{scheme} is symmetric only (no zero point); asymmetric is for int8")


def quantize_archive(
    archive: Archive,
    *,
    scheme: str = "int8",
    symmetric: bool = True,
    per_channel: bool = True,
    include: Any = None,
    exclude: Any = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
) -> TransformResult:
    """Quantise ``archive``'s weights (see the module's docstring); measured against it."""
    check_quantize_options(scheme, symmetric)
    stored = {key: np.asarray(archive.stored[key]) for key in archive.stored}
    encodings: dict[str, TensorEncoding] = {}
    rows = []
    for layer in select(archive, include, exclude, PRUNABLE):
        for param, ref in layer.tensor_refs().items():
            if (layer.kind != "opaque" and param not in _WEIGHTS) or len(ref.shape) < 2:
                continue
            if ref.encoding is not None or ref.dtype not in ("F16", "BF16", "F32", "F64"):
                continue
            axis = (1 if layer.kind == "conv_transpose" else 0) if per_channel else None
            weight = np.asarray(archive.tensors[ref.key])
            q, scale, zero = _quantize(weight, scheme, symmetric, axis)
            encoding = TensorEncoding(
                stored_dtype=SCHEMES[scheme][0], axis=axis,
                scale=TensorRef(key=f"{ref.key}.scale", shape=scale.shape, dtype="F32"),
                zero_point=None if zero is None else TensorRef(key=f"{ref.key}.zero_point",
                                                               shape=zero.shape, dtype="I8"),
            )
            stored[ref.key], stored[encoding.scale.key] = q, scale
            if zero is not None:
                stored[encoding.zero_point.key] = zero
            encodings[ref.key] = encoding
            decoded = decode(ref.model_copy(update={"encoding": encoding}), stored)
            after = q.nbytes + scale.nbytes + (0 if zero is None else zero.nbytes)
            rows.append({"layer": layer.name, "tensor": ref.key,
                         "bytes_before": math.prod(ref.shape) * itemsize(ref.dtype), "bytes_after": after,
                         "worst_weight_error": float(np.max(np.abs(decoded.astype(np.float64) - weight), initial=0.0))})
    data = archive.spec.model_dump(mode="json")
    for layer in data["layers"]:
        refs = layer.get("tensors", {}) if layer["kind"] == "opaque" else layer
        for value in refs.values():
            if isinstance(value, dict) and value.get("key") in encodings:
                value["encoding"] = encodings[value["key"]].model_dump(mode="json")
    how = (f"{scheme} {'symmetric' if symmetric else 'asymmetric'} "
           f"{'per output channel' if per_channel else 'per tensor'}")
    line = f"quantize: {how}: {len(rows)} weight tensor(s) stored encoded (format 1.2)"
    return finish("quantize", archive, data, stored, [line], layers=rows, notes=[line.split(": ", 1)[1]],
                  seed=seed, samples=samples, max_change=max_change)


def _quantize(weight: np.ndarray, scheme: str, symmetric: bool, axis: int | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    w = weight.astype(np.float64)
    axes = tuple(a for a in range(w.ndim) if a != axis)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = w.shape[axis]
    stored_dtype, top = SCHEMES[scheme]
    if symmetric:
        peak = np.max(np.abs(w), axis=axes)
        scale = np.where(peak > 0, peak / top, 1.0).astype(np.float32)
        s = scale.astype(np.float64).reshape(shape)
        if scheme == "int8":
            q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
        else:
            q = (w / s).astype(numpy_dtype(stored_dtype))
        return q, scale, None
    lo = np.minimum(np.min(w, axis=axes), 0.0)
    hi = np.maximum(np.max(w, axis=axes), 0.0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    s = scale.astype(np.float64)
    zero = np.clip(np.rint(-128.0 - lo / s), -128, 127).astype(np.int8)
    q = np.clip(np.rint(w / s.reshape(shape)) + zero.reshape(shape), -128, 127).astype(np.int8)
    return q, scale, zero
