"""Keras writers for normalisation, embedding, recurrent and merge kinds.

Registered into ``keras_write.KERAS_WRITE``. Every setting is passed explicitly (epsilon, axis,
center/scale, activations), so Keras's defaults never decide a number. A canonical recurrent
layer with ``num_layers > 1`` becomes that many stacked Keras layers; ``bidirectional`` becomes
``Bidirectional(..., merge_mode="concat")``. Keras has one recurrent bias where the canonical
form has two: it gets ``bias_ih + bias_hh`` (see ``layouts_seq``). ``last_step`` is written as
``x[:, -1]`` (a ``GetItem`` operation), so a spec holding one is built as a Functional model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.adapters.keras_write import _KERAS_FLOAT, KERAS_WRITE, WriteContext
from weightio.archive import Archive
from weightio.errors import UnsupportedLayerError
from weightio.layouts_seq import recurrent_to_keras
from weightio.spec import LayerBase, ModelSpec
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer
from weightio.spec.recurrent import EmbeddingLayer, RecurrentBase

#: Kinds Keras can only express inside a Functional model.
FUNCTIONAL_ONLY_KINDS = frozenset({"last_step", "multi_head_attention"})


def needs_functional(spec: ModelSpec) -> bool:
    """True when a chain still has to be built as a Functional model (it holds an operation)."""
    return any(layer.kind in FUNCTIONAL_ONLY_KINDS for layer in spec.layers)


def _array(ctx: WriteContext, ref: Any) -> np.ndarray:
    return np.asarray(ctx.archive.tensors[ref.key])


def _float_dtype(layer: LayerBase, ref: Any) -> str:
    if ref.dtype not in _KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"{layer.kind} parameters are {ref.dtype}; Keras computes in float dtypes only",
            layer=layer.name,
        )
    return _KERAS_FLOAT[ref.dtype]


def _shape_for(rank: int | None, axis: int, size: int) -> tuple[int | None, ...]:
    """A build shape of the layer's input rank with ``size`` on ``axis`` (rank 2 if unknown)."""
    shape: list[int | None] = [None] * (rank or 2)
    shape[axis] = size
    return tuple(shape)


def _weights(ctx: WriteContext, layer: LayerBase, names: tuple[str, ...]) -> list[np.ndarray]:
    return [_array(ctx, getattr(layer, n)) for n in names if getattr(layer, n) is not None]


def _channels_last_axis(layer: Any, rank: int) -> int:
    """The Keras axis of canonical ``layer.axis`` on a channels-last feature map of ``rank``."""
    positive = layer.axis if layer.axis > 0 else layer.axis + rank
    if not 0 < positive < rank:
        raise UnsupportedLayerError(
            f"{layer.kind} axis {layer.axis} is out of range for a rank-{rank} feature map",
            layer=layer.name,
        )
    return -1 if positive == 1 else positive - 1


def _feature_map_rank(layer: Any, ctx: WriteContext) -> int:
    if getattr(layer, "input_rank", None) is not None:
        return layer.input_rank
    from weightio.layout_flow import tensor_ranks

    spec = ctx.archive.spec
    index = next(i for i, l in enumerate(spec.layers) if l.name == layer.name)
    rank = tensor_ranks(spec).get(spec.layer_inputs(index)[0])
    if rank is None:
        raise UnsupportedLayerError(
            f"{layer.kind} on a feature map of unknown rank", layer=layer.name
        )
    return rank


@KERAS_WRITE.register("batch_norm")
def _batch_norm(layer: BatchNormLayer, ctx: WriteContext) -> list[Any]:
    """BatchNormalization(axis, epsilon, center, scale) with the moving statistics set.

    On a feature map (``ctx.layout == "channels"``) Keras holds the tensor channels-last, so the
    canonical channel axis 1 becomes ``axis=-1`` (a spatial axis ``k`` becomes ``k - 1``): the
    layer reads the channels-last tensor as is, no permute around it.
    """
    dtype = _float_dtype(layer, layer.running_mean)
    if ctx.layout == "channels":
        rank = _feature_map_rank(layer, ctx)
        axis = _channels_last_axis(layer, rank)
    else:
        axis = layer.axis
        rank = layer.input_rank or (2 if layer.axis in (1, -1) else None)
        if rank is None:
            raise UnsupportedLayerError(
                f"batch_norm on axis {layer.axis} of an input of unknown rank", layer=layer.name
            )
    bn = ctx.keras.layers.BatchNormalization(
        axis=axis,
        epsilon=layer.eps,
        center=layer.bias is not None,
        scale=layer.weight is not None,
        momentum=0.99 if layer.momentum is None else 1.0 - layer.momentum,
        dtype=dtype,
        name=ctx.names.by_spec[layer.name],
    )
    bn.build(_shape_for(rank, axis, layer.num_features))
    bn.set_weights(_weights(ctx, layer, ("weight", "bias", "running_mean", "running_var")))
    ctx.dtype = dtype
    return [bn]


@KERAS_WRITE.register("layer_norm")
def _layer_norm(layer: LayerNormLayer, ctx: WriteContext) -> list[Any]:
    """LayerNormalization over the last ``len(normalized_shape)`` axes."""
    ref = layer.weight or layer.bias
    dtype = _float_dtype(layer, ref) if ref is not None else ctx.dtype
    k = len(layer.normalized_shape)
    ln = ctx.keras.layers.LayerNormalization(
        axis=-1 if k == 1 else list(range(-k, 0)),
        epsilon=layer.eps,
        center=layer.bias is not None,
        scale=layer.weight is not None,
        dtype=dtype,
        name=ctx.names.by_spec[layer.name],
    )
    ln.build((None, *layer.normalized_shape))
    ln.set_weights(_weights(ctx, layer, ("weight", "bias")))
    ctx.dtype = dtype
    return [ln]


@KERAS_WRITE.register("group_norm")
def _group_norm(layer: GroupNormLayer, ctx: WriteContext) -> list[Any]:
    """GroupNormalization(groups, axis, epsilon, center, scale); on a feature map the canonical
    channel axis 1 becomes ``axis=-1`` of the channels-last tensor (as for batch_norm).
    """
    ref = layer.weight or layer.bias
    dtype = _float_dtype(layer, ref) if ref is not None else ctx.dtype
    axis, rank = layer.axis, layer.input_rank
    if ctx.layout == "channels":
        rank = _feature_map_rank(layer, ctx)
        axis = _channels_last_axis(layer, rank)
    gn = ctx.keras.layers.GroupNormalization(
        groups=layer.num_groups,
        axis=axis,
        epsilon=layer.eps,
        center=layer.bias is not None,
        scale=layer.weight is not None,
        dtype=dtype,
        name=ctx.names.by_spec[layer.name],
    )
    gn.build(_shape_for(rank, axis, layer.num_channels))
    gn.set_weights(_weights(ctx, layer, ("weight", "bias")))
    ctx.dtype = dtype
    return [gn]


@KERAS_WRITE.register("normalization")
def _normalization(layer: NormalizationLayer, ctx: WriteContext) -> list[Any]:
    """Normalization(axis, mean=, variance=): the statistics travel in the layer's config."""
    keras = ctx.keras
    if float(keras.config.epsilon()) != layer.eps:
        raise UnsupportedLayerError(
            f"Keras Normalization floors the deviation at keras.config.epsilon() = "
            f"{keras.config.epsilon()}, the archive at {layer.eps}; set keras.config.set_epsilon({layer.eps})",
            layer=layer.name,
        )
    mean, variance = _array(ctx, layer.mean), _array(ctx, layer.variance)
    return [
        keras.layers.Normalization(
            axis=layer.axis,
            mean=mean.tolist(),
            variance=variance.tolist(),
            dtype=_float_dtype(layer, layer.mean),
            name=ctx.names.by_spec[layer.name],
        )
    ]


@KERAS_WRITE.register("embedding")
def _embedding(layer: EmbeddingLayer, ctx: WriteContext) -> list[Any]:
    """Embedding(input_dim, output_dim), never masking."""
    dtype = _float_dtype(layer, layer.weight)
    emb = ctx.keras.layers.Embedding(
        layer.num_embeddings,
        layer.embedding_dim,
        mask_zero=False,
        dtype=dtype,
        name=ctx.names.by_spec[layer.name],
    )
    emb.build((None, None))
    emb.set_weights([_array(ctx, layer.weight)])
    ctx.dtype = dtype
    return [emb]


_RNN_CLASS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def _recurrent_layer(layer: RecurrentBase, ctx: WriteContext, k: int, dtype: str, name: str) -> Any:
    """Stacked layer ``k`` as a Keras layer (wrapped in Bidirectional when two directions)."""
    keras = ctx.keras
    cls = getattr(keras.layers, _RNN_CLASS[layer.kind])
    options: dict[str, Any] = {
        "use_bias": layer.use_bias,
        "activation": getattr(layer, "activation", "tanh"),
    }
    if layer.kind != "simple_rnn":
        options["recurrent_activation"] = "sigmoid"
    if layer.kind == "gru":
        options["reset_after"] = True
    sequences = layer.return_sequences or k < layer.num_layers - 1
    in_size = layer.input_size if k == 0 else layer.hidden_size * layer.directions
    weights = _recurrent_weights(layer, ctx.archive, k)
    if not layer.bidirectional:
        rnn = cls(layer.hidden_size, return_sequences=sequences, dtype=dtype, name=name, **options)
        rnn.build((None, None, in_size))
        rnn.set_weights(weights)
        return rnn
    forward = cls(
        layer.hidden_size,
        return_sequences=sequences,
        dtype=dtype,
        name=f"forward_{name}",
        **options,
    )
    wrapper = keras.layers.Bidirectional(forward, merge_mode="concat", dtype=dtype, name=name)
    wrapper.build((None, None, in_size))
    wrapper.set_weights(weights)
    return wrapper


def _recurrent_weights(layer: RecurrentBase, archive: Archive, k: int) -> list[np.ndarray]:
    """The Keras weights of stacked layer ``k``: forward direction, then backward if any."""
    arrays = {n: np.asarray(archive.tensors[ref.key]) for n, ref in layer.weights.items()}
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weights: list[np.ndarray] = []
    for suffix in ("", "_reverse")[: layer.directions]:
        params = {n: arrays[f"{n}_l{k}{suffix}"] for n in names if f"{n}_l{k}{suffix}" in arrays}
        weights += recurrent_to_keras(layer.kind, params)
    return weights


def keras_weights(archive: Archive, layer: LayerBase) -> list[np.ndarray] | None:
    """What ``set_weights`` of the Keras layer reading as ``layer`` takes, for ``load_into``;
    None where the canonical parameter order is already Keras's (norms, embedding).
    """
    if isinstance(layer, RecurrentBase):
        if layer.num_layers != 1:
            raise UnsupportedLayerError(
                "a stacked recurrent layer pairs with several Keras layers; load each into its own",
                layer=layer.name,
            )
        return _recurrent_weights(layer, archive, 0)
    if layer.kind == "multi_head_attention":
        return _attention_weights(layer, lambda ref: np.asarray(archive.tensors[ref.key]))
    if layer.kind == "normalization":
        raise UnsupportedLayerError(
            "Keras Normalization keeps its statistics with an adapt count; rebuild it with "
            "mean= and variance= instead of loading into it",
            layer=layer.name,
        )
    return None


@KERAS_WRITE.register("simple_rnn", "lstm", "gru")
def _recurrent(layer: RecurrentBase, ctx: WriteContext) -> list[Any]:
    """One Keras layer per stacked layer; two canonical biases summed into Keras's one."""
    if not layer.batch_first:
        raise UnsupportedLayerError(
            f"this {layer.kind} reads time-major (T, N, F) input (torch batch_first=False); Keras "
            "treats axis 0 as the batch. Build the PyTorch model with batch_first=True",
            layer=layer.name,
        )
    dtype = _float_dtype(layer, layer.weights["weight_ih_l0"])
    base = ctx.names.by_spec[layer.name]
    built = [
        _recurrent_layer(layer, ctx, k, dtype, base if k == 0 else ctx.names.fresh(f"{base}_l{k}"))
        for k in range(layer.num_layers)
    ]
    ctx.dtype = dtype
    return built


_MERGE_CLASS = {
    "add": "Add",
    "subtract": "Subtract",
    "multiply": "Multiply",
    "average": "Average",
    "maximum": "Maximum",
    "minimum": "Minimum",
}


@KERAS_WRITE.register(*_MERGE_CLASS)
def _merge(layer: MergeLayer, ctx: WriteContext) -> list[Any]:
    """The Keras merge layer of the same name, called on the list of inputs."""
    cls = getattr(ctx.keras.layers, _MERGE_CLASS[layer.kind])
    return [cls(name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)]


@KERAS_WRITE.register("concatenate")
def _concatenate(layer: ConcatenateLayer, ctx: WriteContext) -> list[Any]:
    """Concatenate(axis); on feature maps the canonical axis moves to channels-last (1 -> -1)."""
    axis = layer.axis
    if ctx.layout == "channels":
        axis = _channels_last_axis(layer, _feature_map_rank(layer, ctx))
    return [
        ctx.keras.layers.Concatenate(axis=axis, name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)
    ]


@KERAS_WRITE.register("last_step")
def _last_step(layer: LastStepLayer, ctx: WriteContext) -> list[Any]:
    """``x[:, -1]``: Keras records it as a built-in GetItem operation (safe to load)."""
    return [lambda tensor: tensor[:, -1]]


@KERAS_WRITE.register("multi_head_attention")
def _attention(layer: Any, ctx: WriteContext) -> list[Any]:
    """MultiHeadAttention(num_heads, key_dim=E/heads) called as ``mha(x, x)``."""
    e, heads = layer.embed_dim, layer.num_heads
    d = e // heads
    dtype = _float_dtype(layer, layer.in_proj_weight)
    mha = ctx.keras.layers.MultiHeadAttention(
        heads,
        d,
        value_dim=d,
        use_bias=layer.use_bias,
        dtype=dtype,
        name=ctx.names.by_spec[layer.name],
    )
    mha.build((None, None, e), (None, None, e))
    weights = _attention_weights(layer, lambda ref: _array(ctx, ref))
    mha.set_weights(weights)
    ctx.dtype = dtype
    return [lambda tensor: mha(tensor, tensor)]


def _attention_weights(layer: Any, get: Any) -> list[np.ndarray]:
    """Packed ``in_proj_weight [3E, E]`` -> Keras's query/key/value kernels ``[E, heads, dim]``."""
    e, heads = layer.embed_dim, layer.num_heads
    d = e // heads
    w_in = get(layer.in_proj_weight)
    weights = []
    for block in range(3):
        weights.append(
            np.ascontiguousarray(w_in[block * e : (block + 1) * e].T.reshape(e, heads, d))
        )
        if layer.use_bias:
            weights.append(
                np.ascontiguousarray(
                    get(layer.in_proj_bias)[block * e : (block + 1) * e].reshape(heads, d)
                )
            )
    weights.append(np.ascontiguousarray(get(layer.out_proj_weight).T.reshape(heads, d, e)))
    if layer.use_bias:
        weights.append(get(layer.out_proj_bias))
    return weights
