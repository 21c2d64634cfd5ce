"""PyTorch nn.MultiheadAttention -> the spec's multi-head self-attention."""

from __future__ import annotations

from typing import Any

from weightio.frameworks.torch.read.base import (
    TORCH_READ,
    ReadContext,
)
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.base import LayerBase

# -- attention ----------------------------------------------------------------------------------

_ATTENTION_KWARGS = {"need_weights", "average_attn_weights"}


def check_attention_call(node: Any) -> str | None:
    """Why an ``nn.MultiheadAttention`` call is not plain self-attention, or None if it is."""
    args = list(node.args)
    if len(args) != 3 or not all(a is args[0] for a in args):
        return "query, key and value must be one tensor (self-attention)"
    extra = set(node.kwargs) - _ATTENTION_KWARGS
    if extra:
        return f"called with {', '.join(sorted(extra))} (masks and causal attention are not mapped)"
    return None


#: Module classes whose call takes several arguments, with the check of each call.
MULTI_ARGUMENT_MODULES = {"torch.nn.MultiheadAttention": check_attention_call}


@TORCH_READ.register("torch.nn.MultiheadAttention", produces=("multi_head_attention",))
def _attention(module: Any, ctx: ReadContext) -> LayerBase:
    """Packed projections (kdim = vdim = embed_dim), batch_first=True, no bias_k/v or zero-attn."""
    if not module._qkv_same_embed_dim:
        raise ctx.refuse(
            "kdim/vdim differ from embed_dim; only packed self-attention maps to Keras"
        )
    if not module.batch_first:
        raise ctx.refuse("batch_first=False reads (T, N, E); build it with batch_first=True")
    if module.bias_k is not None or module.add_zero_attn:
        raise ctx.refuse("add_bias_kv / add_zero_attn have no Keras equivalent")
    has_bias = module.in_proj_bias is not None
    if has_bias != (module.out_proj.bias is not None):
        raise ctx.refuse("bias on the input projection but not the output one (or the reverse)")
    refs = {
        "in_proj_weight": ctx.tensor("in_proj_weight", module.in_proj_weight),
        "out_proj_weight": ctx.tensor("out_proj.weight", module.out_proj.weight),
    }
    if has_bias:
        refs["in_proj_bias"] = ctx.tensor("in_proj_bias", module.in_proj_bias)
        refs["out_proj_bias"] = ctx.tensor("out_proj.bias", module.out_proj.bias)
    base = ctx.base()
    base["inputs"] = base["inputs"][:1]
    return MultiHeadAttentionLayer(
        **base,
        embed_dim=int(module.embed_dim),
        num_heads=int(module.num_heads),
        use_bias=has_bias,
        **refs,
    )
