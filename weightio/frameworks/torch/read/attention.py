"""PyTorch nn.MultiheadAttention -> the spec's multi-head self-attention."""

from __future__ import annotations

import operator
from typing import Any

from weightio.errors import UnsupportedLayerError
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

#: Functions refused with a reason of their own (by ``__name__``), rather than the generic one.
FUNCTION_REFUSALS = {
    "scaled_dot_product_attention": (
        "F.scaled_dot_product_attention called directly takes query, key and value computed in "
        "forward (projections, head splits), while the multi_head_attention kind holds its "
        "projections; no one layer reads it exactly. Build the block with nn.MultiheadAttention "
        "(batch_first=True), which weightio reads"
    ),
}

#: ``node.meta`` flag: a ``batch_first=False`` attention whose transposes were folded away.
SEQUENCE_FIRST_FOLDED = "weightio_sequence_first_folded"


def _swaps_first_two(node: Any) -> Any:
    """The input of ``x.transpose(0, 1)``/``x.permute(1, 0, 2)`` (rank 3), else None."""
    if node.op not in ("call_method", "call_function") or node.kwargs:
        return None
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    args = list(node.args)
    if name == "transpose" and len(args) == 3 and sorted(a % 3 if isinstance(a, int) else a
                                                         for a in args[1:]) == [0, 1]:
        return args[0]
    dims = args[1:] if name == "permute" and node.op == "call_method" else args[1:2]
    if name == "permute" and len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = list(dims[0])
    if name == "permute" and list(dims) == [1, 0, 2]:
        return args[0]
    return None


def fold_sequence_first(gm: Any, root: Any) -> None:
    """``mha(x.transpose(0, 1), …)`` with ``batch_first=False``, its output transposed back: the
    transposes cancel the module's (T, N, E) layout, so the call reads the batch-first tensor
    itself and is marked to be read as batch-first attention. Any other use of a sequence-first
    attention is left for its reader to refuse by name.
    """
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or qualified_name(root.get_submodule(node.target)) != _MHA:
            continue
        module = root.get_submodule(node.target)
        if module.batch_first or check_attention_call(node) is not None:
            continue
        source = _swaps_first_two(node.args[0])
        picks = list(node.users)
        if source is None or not all(
            u.op == "call_function" and u.target is operator.getitem and u.args[1] in (0, 1) for u in picks
        ):
            continue
        outputs = [u for u in picks if u.args[1] == 0]
        backs = [b for u in outputs for b in u.users]
        if any(u.users for u in picks if u.args[1] == 1) or not backs or not all(
            _swaps_first_two(b) is u for u in outputs for b in u.users
        ):
            continue
        transposed = node.args[0]
        node.args = (source, source, source)
        for back in backs:
            back.replace_all_uses_with(back.args[0])
            gm.graph.erase_node(back)
        if not transposed.users:
            gm.graph.erase_node(transposed)
        node.meta[SEQUENCE_FIRST_FOLDED] = True
    gm.recompile()


_MHA = "torch.nn.MultiheadAttention"


@TORCH_READ.register("torch.nn.MultiheadAttention", produces=("multi_head_attention",))
def _attention(module: Any, ctx: ReadContext) -> LayerBase:
    """Packed projections (kdim = vdim = embed_dim), batch_first=True, no bias_k/v or zero-attn."""
    if not module._qkv_same_embed_dim:
        raise ctx.refuse(
            "kdim/vdim differ from embed_dim; only packed self-attention maps to Keras"
        )
    if not module.batch_first and not ctx.node_meta.get(SEQUENCE_FIRST_FOLDED):
        raise ctx.refuse(
            "batch_first=False attends over axis 0, which the converted model takes as the batch; "
            "build it with batch_first=True, or call it on x.transpose(0, 1) and transpose its "
            "output back (weightio folds that pair away)"
        )
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


# -- transformer encoder layers: traced through, as the compositions they compute ------------------

_TEL = "torch.nn.TransformerEncoderLayer"
_ENCODER = "torch.nn.TransformerEncoder"


def _refuse_masks(module: Any, path: str, **given: Any) -> None:
    """A mask, a key padding mask or a causal flag changes what the layer computes; none maps."""
    used = [name for name, value in given.items() if value is not None and value is not False]
    if used:
        raise UnsupportedLayerError(
            f"{qualified_name(module)} called with {', '.join(used)}: masks and causal attention are "
            "not mapped (the attention kind is unmasked self-attention); call it with the sequence only",
            layer=path,
        )


def _encoder_layer_forward(
    module: Any, path: str, src: Any, src_mask: Any = None, src_key_padding_mask: Any = None, is_causal: bool = False
) -> Any:
    """``TransformerEncoderLayer.forward``'s reference path (the one its fast path computes in
    eval mode), written with its submodules so ``torch.fx`` records each: attention, dropout,
    residual add, layer norm, the two linears and the activation.
    """
    _refuse_masks(module, path, src_mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
    approximate = getattr(module.activation, "approximate", "none")
    if getattr(module, "activation_relu_or_gelu", 0) == 2 and approximate != "none":
        raise UnsupportedLayerError(
            f"{qualified_name(module)} with GELU(approximate={approximate!r}) computes two functions: "
            "torch's eval fast path (no grad) applies the exact GELU, its reference path the tanh "
            "approximation, so no one conversion matches the module; use activation='gelu' (exact) "
            "or write the block with nn.GELU(approximate='tanh') outside TransformerEncoderLayer",
            layer=path,
        )

    def attend(x: Any) -> Any:
        return module.dropout1(module.self_attn(x, x, x, need_weights=False)[0])

    def feed_forward(x: Any) -> Any:
        return module.dropout2(module.linear2(module.dropout(module.activation(module.linear1(x)))))

    x = src
    if module.norm_first:
        x = x + attend(module.norm1(x))
        return x + feed_forward(module.norm2(x))
    x = module.norm1(x + attend(x))
    return module.norm2(x + feed_forward(x))


def _encoder_forward(
    module: Any, path: str, src: Any, mask: Any = None, src_key_padding_mask: Any = None, is_causal: Any = None
) -> Any:
    """``TransformerEncoder.forward`` without a padding mask: its layers in turn, then its norm.
    (``enable_nested_tensor`` only acts with a padding mask, so it changes nothing here.).
    """
    _refuse_masks(module, path, mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
    output = src
    for layer in module.layers:
        output = layer(output)
    return output if module.norm is None else module.norm(output)


#: Module classes ``torch.fx`` traces through with these forwards, called ``(module, its path,
#: *call arguments)`` (their own forwards branch on tensor properties for the fast path, which
#: fx cannot trace).
TRACED_FORWARDS = {_TEL: _encoder_layer_forward, _ENCODER: _encoder_forward}
