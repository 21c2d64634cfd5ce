"""PyTorch nn.MultiheadAttention -> the spec's multi-head self-attention."""

from __future__ import annotations

from typing import Any

from weightio.frameworks.torch.common import qualified_name
from weightio.frameworks.torch.read.base import (
    TORCH_READ,
    ReadContext,
)
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.base import LayerBase
from weightio.spec.merge import MergeLayer

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


# -- HF transformers' BERT ------------------------------------------------------------------------

#: HF ``transformers``' BERT attention block: self-attention, output projection, residual, norm.
BERT_ATTENTION = "transformers.models.bert.modeling_bert.BertAttention"


@TORCH_READ.register(BERT_ATTENTION, produces=("multi_head_attention", "add", "layer_norm"))
def _bert_attention(call: Any, ctx: ReadContext) -> list[LayerBase]:
    """``BertAttention``: ``LayerNorm(dense(attention(x, mask)) + x)``, as three layers: a
    multi-head attention with separate ``query``/``key``/``value`` projections (each at its own
    state-dict key) and ``output.dense`` as its output projection, the residual ``add``, and the
    ``output.LayerNorm``. Its mask argument is read only as the key padding mask the torch.export
    path proved it is (``read/export.py``): the model input ``attention_mask``.
    """
    module = getattr(call, "inner", call)
    masks = frozenset(getattr(call, "masks", {}) or ())
    attn, out = module.self, module.output
    source = qualified_name(module)
    if getattr(attn, "is_cross_attention", False) or getattr(attn, "is_decoder", False):
        raise ctx.refuse("cross-attention or a decoder's attention (only encoder self-attention maps)")
    if getattr(attn, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ctx.refuse(f"position_embedding_type={attn.position_embedding_type!r} (relative "
                         "position scores have no Keras MultiHeadAttention form)")
    if len(ctx.inputs) > 2 or (len(ctx.inputs) == 2 and 1 not in masks):
        raise ctx.refuse("called with an attention mask that is not proved to be a key padding "
                         "mask; read the whole BertModel with example_input=(input_ids, "
                         "attention_mask), which goes through torch.export")
    e, heads = int(attn.all_head_size), int(attn.num_attention_heads)
    linears = [attn.query, attn.key, attn.value, out.dense]
    if any(tuple(lin.weight.shape) != (e, e) for lin in linears):
        raise ctx.refuse("projections whose width differs from the hidden size")
    has_bias = {lin.bias is not None for lin in linears}
    if len(has_bias) != 1:
        raise ctx.refuse("bias on some projections but not others")
    scaling = getattr(attn, "scaling", None)
    if scaling is not None and abs(float(scaling) - (e // heads) ** -0.5) > 1e-12:
        raise ctx.refuse(f"scores scaled by {scaling}, not 1/sqrt(head size)")
    use_bias = has_bias.pop()
    refs = {"out_proj_weight": ctx.tensor("output.dense.weight", out.dense.weight)}
    for p, name in zip("qkv", ("query", "key", "value")):
        refs[f"{p}_proj_weight"] = ctx.tensor(f"self.{name}.weight", getattr(attn, name).weight)
        if use_bias:
            refs[f"{p}_proj_bias"] = ctx.tensor(f"self.{name}.bias", getattr(attn, name).bias)
    if use_bias:
        refs["out_proj_bias"] = ctx.tensor("output.dense.bias", out.dense.bias)
    name = ctx.layer_name
    attention = MultiHeadAttentionLayer(
        name=f"{name}.self", inputs=list(ctx.inputs), source_class=source, embed_dim=e,
        num_heads=heads, use_bias=use_bias, key_padding_mask=len(ctx.inputs) == 2, **refs,
    )
    residual = MergeLayer(name=f"{name}.output.add", inputs=[attention.name, ctx.inputs[0]],
                          kind="add", source_class=source)
    norm_ctx = ReadContext(
        layer_name=f"{name}.output.LayerNorm", inputs=[residual.name], source="torch.nn.LayerNorm",
        input_rank=ctx.input_rank, module_path=f"{ctx.module_path}.output.LayerNorm",
        arrays=ctx.arrays, input_shape=ctx.input_shape,
    )
    norm = TORCH_READ.lookup("torch.nn.LayerNorm", layer=name)(out.LayerNorm, norm_ctx)
    # ``name`` itself (the module's path, taken for the call) stays unused.
    return [attention, residual, norm]


MULTI_ARGUMENT_MODULES[BERT_ATTENTION] = lambda node: None  # checked by the reader
