"""Keras MultiHeadAttention -> the spec's multi-head self-attention."""

from __future__ import annotations

import numpy as np

from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import NotExact
from weightio.frameworks.keras.read.base import (
    KERAS_READ,
    KerasLayerEntry,
    expect_weights,
    layer_fields,
)
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.base import LayerBase

# -- attention ----------------------------------------------------------------------------------


@KERAS_READ.register("MultiHeadAttention", produces=("multi_head_attention",))
def _attention(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Self-attention only (query, value and key one tensor, no mask), key_dim = value_dim =
    embed_dim / num_heads, output of the input's width: PyTorch's nn.MultiheadAttention then
    computes the same. Kernels ``[E, heads, dim]`` pack into ``in_proj_weight [3E, E]``.
    """
    config = entry.config
    node = (entry.raw.get("inbound_nodes") or [{}])[0]
    kwargs = node.get("kwargs") if isinstance(node, dict) else None
    masked = False
    for key, value in (kwargs or {}).items():
        if key == "value_mask" and value is not None:
            masked = True  # (N, S), key j attended iff nonzero: the spec's key padding mask
        elif key in ("attention_mask", "query_mask", "key_mask") and value is not None:
            raise NotExact(
                f"MultiHeadAttention called with {key}; weightio maps self-attention with a "
                "value_mask (a key padding mask) or none"
            )
        if key in ("use_causal_mask", "return_attention_scores") and value:
            raise NotExact(f"MultiHeadAttention called with {key}=True")
    sources = list(entry.inputs or [])
    if masked:  # mha(x, x, value_mask=m): the refs are x, x, m
        if len(sources) != 3 or sources[2] in sources[:2]:
            raise NotExact("MultiHeadAttention's value_mask must be a tensor of its own")
        mask_source, sources = sources[2], sources[:2]
    if len(set(sources)) != 1:
        raise NotExact(
            "MultiHeadAttention with distinct query/key/value tensors (cross-attention) has no "
            "exact PyTorch self-attention form"
        )
    if (
        config.get("attention_axes") not in (None, [1], (1,))
        or config.get("output_shape") is not None
    ):
        raise NotExact("MultiHeadAttention with attention_axes or output_shape set")
    use_bias = bool(config.get("use_bias", True))
    expect_weights(entry, 8 if use_bias else 4)
    w = list(entry.weights)
    step = 2 if use_bias else 1
    q, k, v, o = w[0], w[step], w[2 * step], w[3 * step]
    e, heads, d = q.shape
    if heads * d != e or k.shape != q.shape or v.shape != q.shape or o.shape != (heads, d, e):
        raise NotExact(
            f"MultiHeadAttention kernels {[list(a.shape) for a in (q, k, v, o)]}: PyTorch needs "
            "key_dim = value_dim = embed_dim / num_heads and an output of the input's width"
        )
    in_w = np.ascontiguousarray(np.concatenate([a.reshape(e, e).T for a in (q, k, v)]))
    refs = {
        "in_proj_weight": tensors.add(entry.name, "in_proj_weight", in_w),
        "out_proj_weight": tensors.add(
            entry.name, "out_proj_weight", np.ascontiguousarray(o.reshape(e, e).T)
        ),
    }
    if use_bias:
        in_b = np.ascontiguousarray(np.concatenate([w[1].ravel(), w[3].ravel(), w[5].ravel()]))
        refs["in_proj_bias"] = tensors.add(entry.name, "in_proj_bias", in_b)
        refs["out_proj_bias"] = tensors.add(entry.name, "out_proj_bias", w[7])
    base = layer_fields(entry)
    base["inputs"] = None if entry.inputs is None else [sources[0]]
    if masked:
        base["inputs"].append(mask_source)
    entry.transforms.append(
        "multi_head_attention: Keras [E, heads, dim] kernels packed into in_proj_weight [3E, E]"
    )
    return MultiHeadAttentionLayer(
        **base, embed_dim=int(e), num_heads=int(heads), use_bias=use_bias,
        key_padding_mask=masked, **refs
    )
