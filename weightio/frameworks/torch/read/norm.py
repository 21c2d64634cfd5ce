"""PyTorch normalisation modules -> spec layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightio.frameworks.torch.read.base import (
    FUNCTION_PARAMETERS,
    PARAMETER_KEYS,
    REQUIRED,
    TORCH_READ,
    ReadContext,
    StoredTensor,
)
from weightio.spec.base import LayerBase
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer

# -- normalisation --------------------------------------------------------------------------


def _affine(
    module: Any, ctx: ReadContext, weight: str = "weight", bias: str = "bias"
) -> dict[str, Any]:
    out = {}
    for field, attr in (("weight", weight), ("bias", bias)):
        value = getattr(module, attr, None)
        out[field] = None if value is None else ctx.tensor(attr, value)
    return out


@TORCH_READ.register(
    "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", produces=("batch_norm",)
)
def _batch_norm(module: Any, ctx: ReadContext) -> LayerBase:
    """Inference statistics on the channel axis (1); eps exact; momentum kept as metadata."""
    if not module.track_running_stats or module.running_mean is None:
        raise ctx.refuse(
            "track_running_stats=False normalises with each batch's own statistics even in eval "
            "mode; only BatchNorm with running statistics converts"
        )
    return BatchNormLayer(
        **ctx.base(),
        num_features=int(module.num_features),
        axis=1,
        input_rank=ctx.input_rank,
        eps=float(module.eps),
        momentum=None if module.momentum is None else float(module.momentum),
        **_affine(module, ctx),
        running_mean=ctx.tensor("running_mean", module.running_mean),
        running_var=ctx.tensor("running_var", module.running_var),
    )


@TORCH_READ.register("torch.nn.LayerNorm", produces=("layer_norm",))
def _layer_norm(module: Any, ctx: ReadContext) -> LayerBase:
    """normalized_shape, eps, elementwise_affine (and bias=False) as they are."""
    return LayerNormLayer(
        **ctx.base(),
        normalized_shape=tuple(int(d) for d in module.normalized_shape),
        eps=float(module.eps),
        **_affine(module, ctx),
    )


@TORCH_READ.register("torch.nn.GroupNorm", produces=("group_norm",))
def _group_norm(module: Any, ctx: ReadContext) -> LayerBase:
    """Groups of channels on axis 1."""
    return GroupNormLayer(
        **ctx.base(),
        num_groups=int(module.num_groups),
        num_channels=int(module.num_channels),
        axis=1,
        input_rank=ctx.input_rank,
        eps=float(module.eps),
        **_affine(module, ctx),
    )


_LAYER_NORM_F = "torch.nn.functional.layer_norm"


@TORCH_READ.register(_LAYER_NORM_F, produces=("layer_norm",))
def _layer_norm_function(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``F.layer_norm(x, shape, self.weight, self.bias, eps)`` (torchvision's LayerNorm2d calls
    it between two permutes): the weight and bias must be stored tensors, read by their keys.
    """
    tensors = {}
    for field in ("weight", "bias"):
        value = args[field]
        if value is not None and not isinstance(value, StoredTensor):
            raise ctx.refuse(f"{field} is computed in forward; weightio reads a stored parameter")
        tensors[field] = None if value is None else ctx.tensor(value.key, value.value)
    shape = args["normalized_shape"]
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ctx.refuse(f"normalized_shape={args['normalized_shape']!r} must be constant integers")
    return LayerNormLayer(**ctx.base(), normalized_shape=shape, eps=float(args["eps"]), **tensors)


FUNCTION_PARAMETERS[_LAYER_NORM_F] = (
    ("normalized_shape", REQUIRED), ("weight", None), ("bias", None), ("eps", 1e-5),
)
PARAMETER_KEYS.add(_LAYER_NORM_F)
