"""Normalisation spec kinds -> PyTorch modules."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.torch.write.base import TORCH_WRITE, layer_dtype, load_parameters, torch_nn


def _affine_fill(
    layer: Any, archive: Archive, size: tuple[int, ...]
) -> tuple[dict[str, str], dict[str, np.ndarray], bool]:
    """weight/bias present -> loaded; one missing -> exact ones/zeros; both missing -> no affine."""
    names = {p: p for p in ("weight", "bias") if getattr(layer, p) is not None}
    if not names:
        return {}, {}, False
    dtype = np.asarray(archive.tensors[getattr(layer, next(iter(names))).key]).dtype
    fill = {}
    if "weight" not in names:
        fill["weight"] = np.ones(size, dtype=dtype)
    if "bias" not in names:
        fill["bias"] = np.zeros(size, dtype=dtype)
    return names, fill, True


def _channel_axis_one(layer: Any, what: str) -> int:
    """The input rank of a layer normalising axis 1 (refuse any other axis)."""
    rank = layer.input_rank
    if (
        layer.axis == 1
        or (layer.axis == -1 and rank == 2)
        or (rank is not None and layer.axis + rank == 1)
    ):
        return rank or 2
    raise UnsupportedLayerError(
        f"{layer.kind} over axis {layer.axis} of a rank-{rank or '?'} input: PyTorch's {what} "
        "normalises axis 1 (channels first). A channels-last source needs its layout converted "
        "to channels-first first",
        layer=layer.name,
    )


@TORCH_WRITE.register("batch_norm")
def _batch_norm(layer: Any, archive: Archive) -> list[Any]:
    """BatchNorm1d (rank 2/3), 2d (rank 4) or 3d (rank 5) on axis 1, eps as stored."""
    rank = _channel_axis_one(layer, "BatchNorm")
    cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}.get(rank)
    if cls is None:
        raise UnsupportedLayerError(
            f"batch_norm on a rank-{rank} input has no PyTorch module", layer=layer.name
        )
    names, fill, affine = _affine_fill(layer, archive, (layer.num_features,))
    module = getattr(torch_nn(), cls)(
        layer.num_features,
        eps=layer.eps,
        momentum=layer.momentum if layer.momentum is not None else 0.1,
        affine=affine,
        dtype=layer_dtype(archive, layer),
    )
    names.update(running_mean="running_mean", running_var="running_var")
    return [load_parameters(module, archive, layer, names, fill)]


@TORCH_WRITE.register("layer_norm")
def _layer_norm(layer: Any, archive: Archive) -> list[Any]:
    """LayerNorm(normalized_shape, eps, elementwise_affine, bias)."""
    names, fill, affine = _affine_fill(layer, archive, tuple(layer.normalized_shape))
    kwargs: dict[str, Any] = {"eps": layer.eps, "elementwise_affine": affine}
    if affine:
        kwargs["dtype"] = layer_dtype(archive, layer)
    if affine and layer.bias is None:
        kwargs["bias"], fill = False, {k: v for k, v in fill.items() if k != "bias"}
    module = torch_nn().LayerNorm(list(layer.normalized_shape), **kwargs)
    return [load_parameters(module, archive, layer, names, fill)]


@TORCH_WRITE.register("group_norm")
def _group_norm(layer: Any, archive: Archive) -> list[Any]:
    """GroupNorm(num_groups, num_channels, eps, affine) on axis 1."""
    _channel_axis_one(layer, "GroupNorm")
    names, fill, affine = _affine_fill(layer, archive, (layer.num_channels,))
    kwargs = {"dtype": layer_dtype(archive, layer)} if affine else {}
    module = torch_nn().GroupNorm(
        layer.num_groups, layer.num_channels, eps=layer.eps, affine=affine, **kwargs
    )
    return [load_parameters(module, archive, layer, names, fill)]


@TORCH_WRITE.register("normalization")
def _normalization(layer: Any, archive: Archive) -> list[Any]:
    """Keras Normalization as ``BatchNorm1d/2d/3d(affine=False, eps=0)`` (by rank, axis 1)
    with ``running_var = max(variance, eps**2)``: ``sqrt(max(v, e**2)) == max(sqrt(v), e)``,
    the same floor.
    """
    rank = _channel_axis_one(layer, "BatchNorm")
    cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}.get(rank)
    if cls is None:
        raise UnsupportedLayerError(
            f"normalization of a rank-{rank} input has no PyTorch module", layer=layer.name
        )
    variance = np.asarray(archive.tensors[layer.variance.key])
    floored = np.maximum(variance, np.asarray(layer.eps**2, dtype=variance.dtype))
    module = getattr(torch_nn(), cls)(
        layer.num_features, eps=0.0, affine=False, dtype=layer_dtype(archive, layer)
    )
    return [load_parameters(module, archive, layer, {"running_mean": "mean"}, {"running_var": floored})]
