"""PyTorch normalisation modules -> spec layers."""

from __future__ import annotations

from typing import Any

from weightio.frameworks.torch.read.base import (
    TORCH_READ,
    ReadContext,
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
