"""PyTorch readers for normalisation, embedding, recurrent modules and graph operations.

Registered into ``torch_read_ops.TORCH_READ``. Recurrent modules return tuples
``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); the traced graph picks from them with
``operator.getitem``. Each getitem is read as a provisional placeholder and ``resolve_tuples``
then rewires the graph: ``output`` is the layer's sequence; ``output[:, -1]`` (batch first),
``output[-1]`` (time first) and ``h_n[-1]`` of a one-directional layer are its final state, which
folds into ``return_sequences=False``. Any other use of a tuple element is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightio.adapters.torch_read_ops import FUNCTION_PARAMETERS, REQUIRED, TORCH_READ, ReadContext
from weightio.errors import UnsupportedLayerError
from weightio.spec import IdentityLayer, LayerBase, OutputSpec
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer
from weightio.spec.recurrent import (
    RECURRENT_KINDS,
    EmbeddingLayer,
    GRULayer,
    LSTMLayer,
    RecurrentBase,
    SimpleRNNLayer,
)

#: Function keys whose extra arguments are tensors (checked by their readers, not refused).
MULTI_TENSOR_KEYS = frozenset(
    {
        "operator.add",
        "torch.add",
        "operator.sub",
        "torch.sub",
        "operator.mul",
        "torch.mul",
        "torch.maximum",
        "torch.minimum",
        "torch.cat",
        "torch.concat",
    }
)

_GETITEM_TAG = "operator.getitem:"
_TUPLE_KINDS = RECURRENT_KINDS | {"multi_head_attention"}


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


# -- embedding and recurrent ----------------------------------------------------------------


@TORCH_READ.register("torch.nn.Embedding", produces=("embedding",))
def _embedding(module: Any, ctx: ReadContext) -> LayerBase:
    """Weight [num, dim]; padding_idx only shapes training and is kept as metadata."""
    if module.max_norm is not None:
        raise ctx.refuse(
            f"max_norm={module.max_norm} renormalises rows of the weight during forward; "
            "weightio converts embeddings without max_norm"
        )
    return EmbeddingLayer(
        **ctx.base(),
        num_embeddings=int(module.num_embeddings),
        embedding_dim=int(module.embedding_dim),
        padding_idx=None if module.padding_idx is None else int(module.padding_idx),
        weight=ctx.tensor("weight", module.weight),
    )


_RNN = {"torch.nn.RNN": SimpleRNNLayer, "torch.nn.LSTM": LSTMLayer, "torch.nn.GRU": GRULayer}


@TORCH_READ.register(*_RNN, produces=("simple_rnn", "lstm", "gru"))
def _recurrent(module: Any, ctx: ReadContext) -> LayerBase:
    """Parameters under their torch names; the layer's value is the output sequence."""
    if getattr(module, "proj_size", 0):
        raise ctx.refuse(f"proj_size={module.proj_size} (projected LSTM) has no Keras equivalent")
    extra: dict[str, Any] = {}
    if ctx.source == "torch.nn.RNN":
        extra["activation"] = module.nonlinearity
    weights = {name: ctx.tensor(name, value) for name, value in module.named_parameters()}
    return _RNN[ctx.source](
        **ctx.base(),
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        batch_first=bool(module.batch_first),
        return_sequences=True,
        use_bias=bool(module.bias),
        weights=weights,
        **extra,
    )


# -- graph operations -----------------------------------------------------------------------


def _is_node(value: Any) -> bool:
    return hasattr(value, "op") and hasattr(value, "meta")


def _rank_of(node: Any) -> int | None:
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return None if shape is None else len(shape)


_BINARY = {
    "operator.add": "add",
    "torch.add": "add",
    "operator.sub": "subtract",
    "torch.sub": "subtract",
    "operator.mul": "multiply",
    "torch.mul": "multiply",
    "torch.maximum": "maximum",
    "torch.minimum": "minimum",
}


def _binary(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``a + b``, ``a - b``, ``a * b``, ``torch.maximum(a, b)`` between two traced tensors."""
    if not _is_node(args["other"]):
        raise ctx.refuse(
            f"operates on a tensor and the constant {args['other']!r}; weightio reads it only "
            "between two layer outputs (e.g. the residual x + self.fc(x))"
        )
    if args.get("alpha", 1) != 1:
        raise ctx.refuse(f"alpha={args['alpha']} scales the second operand; only alpha=1 maps")
    if len(ctx.inputs) != 2:
        raise ctx.refuse("expects two distinct traced tensors")
    return MergeLayer(**ctx.base(), kind=_BINARY[ctx.source])  # type: ignore[arg-type]


for _key in _BINARY:
    TORCH_READ.register(_key, produces=(_BINARY[_key],))(_binary)
    FUNCTION_PARAMETERS[_key] = (("other", REQUIRED),) + (
        (("alpha", 1),) if _key in ("torch.add", "torch.sub") else ()
    )


@TORCH_READ.register("torch.cat", "torch.concat", produces=("concatenate",))
def _cat(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``torch.cat([a, b], dim)``: the dim as a negative axis (batch counted), as Keras writes."""
    dim = args["dim"]
    if len(ctx.inputs) < 2:
        raise ctx.refuse("concatenates fewer than two traced tensors")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ctx.refuse(f"dim must be an int. Received: dim={dim!r}")
    rank = ctx.input_rank
    if dim >= 0:
        if rank is None:
            raise ctx.refuse("dim cannot be normalised without the rank; pass example_input=")
        dim -= rank
    if rank is not None and dim <= -rank:
        raise ctx.refuse("concatenates along the batch axis")
    return ConcatenateLayer(**ctx.base(), axis=dim)


FUNCTION_PARAMETERS["torch.cat"] = (("dim", 0),)
FUNCTION_PARAMETERS["torch.concat"] = (("dim", 0),)
FUNCTION_PARAMETERS["operator.getitem"] = (("index", REQUIRED),)


def _full(value: Any) -> bool:
    return isinstance(value, slice) and value == slice(None)


@TORCH_READ.register("operator.getitem", produces=("last_step",))
def _getitem(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``x[:, -1]``/``x[:, -1, :]`` is a last step; ``result[0]``, ``[1]``, ``[-1]``… are tuple
    picks resolved by ``resolve_tuples``.
    """
    index = args["index"]
    if (
        isinstance(index, tuple)
        and len(index) in (2, 3)
        and _full(index[0])
        and index[1] == -1
        and all(_full(i) for i in index[2:])
    ):
        return LastStepLayer(**ctx.base())
    if isinstance(index, int) and not isinstance(index, bool) and index in (0, 1, -1, -2):
        return IdentityLayer(**{**ctx.base(), "source_class": f"{_GETITEM_TAG}{index}"})
    raise ctx.refuse(
        f"indexing with {index!r}: weightio reads a recurrent module's (output, h_n) and a "
        "sequence's last step x[:, -1]"
    )


# -- tuple resolution -----------------------------------------------------------------------


def _pick(layer: LayerBase) -> int | None:
    if layer.kind == "identity" and (layer.source_class or "").startswith(_GETITEM_TAG):
        return int(layer.source_class[len(_GETITEM_TAG) :])  # type: ignore[index]
    return None


def resolve_tuples(
    layers: list[LayerBase], outputs: list[OutputSpec]
) -> tuple[list[LayerBase], list[OutputSpec]]:
    """Replace the provisional tuple picks by the layers they select (see module doc).

    Raises:
        UnsupportedLayerError: a pick that is not the sequence or a one-directional final state.
    """
    by_name = {layer.name: layer for layer in layers}
    if not any(layer.kind in _TUPLE_KINDS or _pick(layer) is not None for layer in layers):
        return layers, outputs

    def trace(name: str) -> tuple[str, list[int]]:
        path: list[int] = []
        while name in by_name and _pick(by_name[name]) is not None:
            path.insert(0, _pick(by_name[name]))  # type: ignore[arg-type]
            name = (by_name[name].inputs or [""])[0]
        return name, path

    consumers: dict[str, list[str]] = {}
    for layer in layers:
        for source in layer.inputs or []:
            consumers.setdefault(source, []).append(layer.name)
    used_names = {out.layer for out in outputs}
    for layer in layers:
        if layer.kind in _TUPLE_KINDS and (
            layer.name in used_names
            or any(_pick(by_name[c]) is None for c in consumers.get(layer.name, []))
        ):
            raise UnsupportedLayerError(
                f"the {layer.source_class} result is a tuple and is used whole; take its output "
                "(out, _ = self.rnn(x)) and use that",
                layer=layer.name,
            )

    def read_directly(name: str) -> bool:
        """Read by a real layer or returned (not only picked further)."""
        return name in used_names or any(_pick(by_name[c]) is None for c in consumers.get(name, []))

    # What each used pick means: ("seq" | "final", recurrent layer name).
    meaning: dict[str, tuple[str, str]] = {}
    for layer in layers:
        if _pick(layer) is None or not read_directly(layer.name):
            continue  # a real layer, an unused pick, or a step of a longer pick (h_n of (h_n, c_n))
        base, path = trace(layer.name)
        rnn = by_name.get(base)
        if rnn is not None and rnn.kind == "multi_head_attention" and path == [0]:
            meaning[layer.name] = ("seq", base)  # (attn_output, attn_weights)[0]
            continue
        if rnn is None or rnn.kind not in RECURRENT_KINDS:
            raise UnsupportedLayerError(
                f"indexes the output of {base!r} with {path}; weightio reads tuple elements of recurrent modules only",
                layer=layer.name,
            )
        state_path = [1, 0, -1] if rnn.kind == "lstm" else [1, -1]
        if path == [0]:
            meaning[layer.name] = ("seq", base)
        elif (
            path == state_path or (path == [0, -1] and not rnn.batch_first)
        ) and not rnn.bidirectional:  # type: ignore[attr-defined]
            meaning[layer.name] = ("final", base)
        else:
            raise UnsupportedLayerError(
                f"reads element {path} of the {rnn.kind} {base!r}'s result; weightio reads its output "
                "sequence, output[:, -1] and (one direction) h_n[-1]",
                layer=layer.name,
            )

    # A last step of a one-directional batch-first sequence is the final state too.
    for layer in layers:
        if layer.kind == "last_step":
            target = meaning.get((layer.inputs or [""])[0])
            base = by_name[target[1]] if target else None
            if (
                target
                and target[0] == "seq"
                and isinstance(base, RecurrentBase)
                and not base.bidirectional
                and base.batch_first
            ):
                meaning[layer.name] = ("final", target[1])

    wants: dict[str, set[str]] = {}
    for name, (what, base) in meaning.items():
        real = [c for c in consumers.get(name, []) if _pick(by_name[c]) is None]
        if (
            what == "seq"
            and real
            and name not in used_names
            and all(meaning.get(c, ("", ""))[0] == "final" for c in real)
        ):
            continue  # read only by last steps, which fold into the layer
        if real or name in used_names:
            wants.setdefault(base, set()).add(what)
    rename: dict[str, str] = {}
    updated: dict[str, LayerBase] = {}
    for base, kinds in wants.items():
        if kinds == {"final"}:
            updated[base] = by_name[base].model_copy(update={"return_sequences": False})
        elif "final" in kinds:
            raise UnsupportedLayerError(
                "both the output sequence and the final state of this layer are used; read one "
                "of them (e.g. output[:, -1] instead of h_n[-1])",
                layer=base,
            )
    for name, (what, base) in meaning.items():
        if what == "final" and base not in updated:
            continue  # a last_step kept on a sequence that is also used whole
        rename[name] = base

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    result = []
    for layer in layers:
        if _pick(layer) is not None or layer.name in rename:
            continue
        layer = updated.get(layer.name, layer)
        if layer.inputs is not None:
            layer = layer.model_copy(update={"inputs": [resolve(s) for s in layer.inputs]})
        result.append(layer)
    outs = [out.model_copy(update={"layer": resolve(out.layer)}) for out in outputs]
    return result, outs


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
