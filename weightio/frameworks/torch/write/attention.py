"""Multi-head self-attention -> PyTorch nn.MultiheadAttention."""

from __future__ import annotations

from typing import Any

from weightio.format.archive import Archive
from weightio.frameworks.torch.write.base import TORCH_WRITE, layer_dtype, load_parameters, torch_nn


@TORCH_WRITE.register("multi_head_attention")
def attention_module(layer: Any, archive: Archive) -> list[Any]:
    """nn.MultiheadAttention(embed_dim, num_heads, bias, batch_first=True), packed projections."""
    module = torch_nn().MultiheadAttention(
        layer.embed_dim,
        layer.num_heads,
        bias=layer.use_bias,
        batch_first=True,
        dtype=layer_dtype(archive, layer),
    )
    names = {"in_proj_weight": "in_proj_weight", "out_proj.weight": "out_proj_weight"}
    if layer.use_bias:
        names.update({"in_proj_bias": "in_proj_bias", "out_proj.bias": "out_proj_bias"})
    return [load_parameters(module, archive, layer, names)]
