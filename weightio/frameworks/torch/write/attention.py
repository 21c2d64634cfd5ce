"""Multi-head self-attention -> PyTorch nn.MultiheadAttention."""

from __future__ import annotations

from typing import Any

import numpy as np

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
    names = {"out_proj.weight": "out_proj_weight"}
    if layer.use_bias:
        names["out_proj.bias"] = "out_proj_bias"
    if not layer.separate:
        names["in_proj_weight"] = "in_proj_weight"
        if layer.use_bias:
            names["in_proj_bias"] = "in_proj_bias"
        return [load_parameters(module, archive, layer, names)]
    # Separate q/k/v projections (HF BERT's) pack into nn.MultiheadAttention's in_proj.
    refs = layer.tensor_refs()
    fill = {"in_proj_weight": np.concatenate([archive.tensors[refs[f"{p}_proj_weight"].key] for p in "qkv"])}
    if layer.use_bias:
        fill["in_proj_bias"] = np.concatenate([archive.tensors[refs[f"{p}_proj_bias"].key] for p in "qkv"])
    return [load_parameters(module, archive, layer, names, fill)]
