"""Keras readers for normalisation, embedding, recurrent and merge layers (Keras-free).

Registered into ``keras_mapping.KERAS_READ``. Like the core mappings they see plain config data
and arrays only, so the TensorFlow-free reader shares them. Each raises ``NotExact`` (the layer
is then kept opaque, with the reason) where Keras computes something the spec cannot state
exactly: a GRU with ``reset_after=False``, a recurrent activation other than sigmoid, masking,
``return_state``, a statefull RNN, a non-concat Bidirectional merge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.adapters.common import TensorCollector
from weightio.adapters.keras_activations import NotExact, short
from weightio.adapters.keras_mapping import (
    KERAS_READ,
    KerasLayerEntry,
    _base,
    _expect_weights,
    _refuse_quantized,
)
from weightio.layouts_seq import (
    GRU_GATES_FROM_KERAS,
    RECURRENT_KERNEL_TRANSPOSED,
    gru_from_keras,
    lstm_from_keras,
    simple_rnn_from_keras,
)
from weightio.spec import LayerBase
from weightio.spec.attention import MultiHeadAttentionLayer
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.norm import BatchNormLayer, GroupNormLayer, LayerNormLayer, NormalizationLayer
from weightio.spec.recurrent import EmbeddingLayer, GRULayer, LSTMLayer, SimpleRNNLayer

#: Keras's default ``backend.epsilon()``, the floor of Normalization's standard deviation.
KERAS_EPSILON = 1e-7


def _input_rank(entry: KerasLayerEntry) -> int | None:
    """The layer's input rank (batch included) from its ``build_config``, when recorded."""
    build = entry.raw.get("build_config") if entry.raw else None
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], (list, tuple)):
        return len(shape)
    return None


def _single_axis(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotExact(f"{what} over axis {short(value)}: weightio maps one axis")
    return value


def _flags(entry: KerasLayerEntry) -> tuple[bool, bool]:
    return bool(entry.config.get("scale", True)), bool(entry.config.get("center", True))


def _canonical_axis(axis: int, rank: int | None) -> int:
    """The canonical (channels-first) axis of Keras ``axis`` on a channels-last feature map.

    The last axis (channels) becomes 1; spatial axis ``k`` becomes ``k + 1``.
    """
    if axis == -1:
        return 1
    if rank is None:
        raise NotExact(f"axis {axis} of a channels-last feature map of unknown rank")
    positive = axis if axis >= 0 else axis + rank
    if not 0 < positive < rank:
        raise NotExact(f"axis {axis} is the batch axis or out of range for a rank-{rank} input")
    return 1 if positive == rank - 1 else positive + 1


# -- normalisation ------------------------------------------------------------------------------


@KERAS_READ.register("BatchNormalization", produces=("batch_norm",))
def _batch_norm(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var; eps as is."""
    config = entry.config
    if config.get("renorm"):
        raise NotExact("BatchNormalization(renorm=True) changes the inference statistics")
    scale, center = _flags(entry)
    _expect_weights(entry, 2 + scale + center)
    weights = list(entry.weights)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    mean, var = weights
    momentum = config.get("momentum", 0.99)
    axis = _single_axis(config.get("axis", -1), "BatchNormalization")
    rank = _input_rank(entry)
    if entry.input_tags and entry.input_tags[0] == "channels":
        axis = _canonical_axis(axis, rank)
    return BatchNormLayer(
        **_base(entry),
        num_features=int(mean.shape[0]),
        axis=axis,
        input_rank=rank,
        eps=float(config.get("epsilon", 1e-3)),
        momentum=None if momentum is None else 1.0 - float(momentum),
        weight=None if gamma is None else tensors.add(entry.name, "weight", gamma),
        bias=None if beta is None else tensors.add(entry.name, "bias", beta),
        running_mean=tensors.add(entry.name, "running_mean", mean),
        running_var=tensors.add(entry.name, "running_var", var),
    )


@KERAS_READ.register("LayerNormalization", produces=("layer_norm",))
def _layer_norm(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Exact when the normalised axes are the last ones; ``rms_scaling`` is another function."""
    config = entry.config
    if config.get("rms_scaling"):
        raise NotExact("LayerNormalization(rms_scaling=True) is RMS normalisation, not layer norm")
    scale, center = _flags(entry)
    _expect_weights(entry, scale + center)
    axes = config.get("axis", -1)
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
    rank = _input_rank(entry)
    negative = sorted(a - rank if a >= 0 and rank else a for a in axes)
    if any(a >= 0 for a in negative) or negative != list(range(-len(negative), 0)):
        raise NotExact(
            f"LayerNormalization over axes {axes} (not the last axes) has no exact torch form"
        )
    weights = list(entry.weights)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    present = gamma if gamma is not None else beta
    if present is not None:
        shape = tuple(present.shape)
    else:  # no affine parameters: the normalised shape comes from the recorded input shape
        build = (entry.raw.get("build_config") or {}).get("input_shape") or []
        shape = tuple(build[len(build) - len(negative) :])
        if not build or any(d is None for d in shape):
            raise NotExact("LayerNormalization without scale or center and unknown input shape")
    if len(shape) != len(negative):
        raise NotExact(f"LayerNormalization weights {list(shape)} do not match axes {axes}")
    return LayerNormLayer(
        **_base(entry),
        normalized_shape=tuple(int(d) for d in shape),
        eps=float(config.get("epsilon", 1e-3)),
        weight=None if gamma is None else tensors.add(entry.name, "weight", gamma),
        bias=None if beta is None else tensors.add(entry.name, "bias", beta),
    )


@KERAS_READ.register("GroupNormalization", produces=("group_norm",))
def _group_norm(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """groups/axis/epsilon/gamma/beta -> num_groups/axis/eps/weight/bias."""
    config = entry.config
    scale, center = _flags(entry)
    _expect_weights(entry, scale + center)
    if not entry.weights:
        raise NotExact("GroupNormalization without scale or center: its channel count is unknown")
    weights = list(entry.weights)
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    channels = int((gamma if gamma is not None else beta).shape[0])
    axis = _single_axis(config.get("axis", -1), "GroupNormalization")
    rank = _input_rank(entry)
    if entry.input_tags and entry.input_tags[0] == "channels":
        axis = _canonical_axis(axis, rank)
    return GroupNormLayer(
        **_base(entry),
        num_groups=int(config.get("groups", 32)),
        num_channels=channels,
        axis=axis,
        input_rank=rank,
        eps=float(config.get("epsilon", 1e-3)),
        weight=None if gamma is None else tensors.add(entry.name, "weight", gamma),
        bias=None if beta is None else tensors.add(entry.name, "bias", beta),
    )


@KERAS_READ.register("Normalization", produces=("normalization",))
def _normalization(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Adapted (weights mean, variance, count) or given in the config (mean=, variance=)."""
    config = entry.config
    if config.get("invert"):
        raise NotExact("Normalization(invert=True) de-normalises; weightio maps the forward form")
    axis = _single_axis(config.get("axis", -1), "Normalization")
    if entry.weights:
        _expect_weights(entry, 3)
        mean, variance = entry.weights[0], entry.weights[1]
    elif config.get("mean") is not None and config.get("variance") is not None:
        mean = np.asarray(config["mean"], dtype=np.float32)
        variance = np.asarray(config["variance"], dtype=np.float32)
    else:
        raise NotExact("Normalization was never adapted and has no mean/variance")
    mean, variance = np.ravel(mean), np.ravel(variance)
    if mean.shape != variance.shape:
        raise NotExact(
            f"Normalization mean {list(mean.shape)} and variance {list(variance.shape)} differ"
        )
    return NormalizationLayer(
        **_base(entry),
        num_features=int(mean.shape[0]),
        axis=axis,
        input_rank=_input_rank(entry),
        eps=KERAS_EPSILON,
        mean=tensors.add(entry.name, "mean", np.ascontiguousarray(mean)),
        variance=tensors.add(entry.name, "variance", np.ascontiguousarray(variance)),
    )


# -- embedding and recurrent --------------------------------------------------------------------


@KERAS_READ.register("Embedding", produces=("embedding",))
def _embedding(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``embeddings [input_dim, output_dim]`` is canonical already; masking is refused."""
    _refuse_quantized(entry)
    _expect_weights(entry, 1)
    if entry.config.get("mask_zero"):
        raise NotExact(
            "Embedding(mask_zero=True) makes the layers after it skip padded steps, which the "
            "spec does not record; build it with mask_zero=False to convert"
        )
    table = entry.weights[0]
    return EmbeddingLayer(
        **_base(entry),
        num_embeddings=int(table.shape[0]),
        embedding_dim=int(table.shape[1]),
        weight=tensors.add(entry.name, "weight", table),
    )


_CELL_KIND = {"SimpleRNN": "simple_rnn", "LSTM": "lstm", "GRU": "gru"}
_RNN_CLASSES = {"simple_rnn": SimpleRNNLayer, "lstm": LSTMLayer, "gru": GRULayer}


def _check_rnn_config(class_name: str, config: dict[str, Any]) -> None:
    """Refuse, by name, every setting the canonical recurrent kinds do not compute."""
    for key in ("return_state", "stateful", "go_backwards"):
        if config.get(key):
            raise NotExact(f"{class_name}({key}=True) is not supported (the spec has no {key})")
    activation = config.get("activation", "tanh")
    allowed = ("tanh", "relu") if class_name == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise NotExact(
            f"{class_name}(activation={short(activation)}): only {' or '.join(allowed)} maps exactly to PyTorch"
        )
    if class_name != "SimpleRNN" and config.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise NotExact(
            f"{class_name}(recurrent_activation={short(config.get('recurrent_activation'))}): "
            "PyTorch's gates are sigmoid; only recurrent_activation='sigmoid' maps exactly"
        )
    if class_name == "GRU" and not config.get("reset_after", True):
        raise NotExact(
            "GRU(reset_after=False) applies the reset gate before the recurrent matmul; PyTorch's "
            "nn.GRU applies it after (reset_after=True), so no exact mapping exists"
        )


def _direction_weights(
    class_name: str, config: dict[str, Any], arrays: list[np.ndarray], suffix: str
) -> dict[str, np.ndarray]:
    use_bias = bool(config.get("use_bias", True))
    if len(arrays) != 2 + use_bias:
        raise NotExact(f"{class_name} holds {len(arrays)} weights, expected {2 + use_bias}")
    kernel, recurrent = arrays[0], arrays[1]
    bias = arrays[2] if use_bias else None
    convert = {"SimpleRNN": simple_rnn_from_keras, "LSTM": lstm_from_keras, "GRU": gru_from_keras}
    try:
        converted = convert[class_name](kernel, recurrent, bias)
    except ValueError as exc:
        raise NotExact(f"{class_name}: {exc}") from None
    return {f"{name}_l0{suffix}": value for name, value in converted.items()}


def _rnn(
    entry: KerasLayerEntry,
    tensors: TensorCollector,
    inner: dict[str, Any],
    arrays: list[np.ndarray],
    backward: dict[str, Any] | None,
) -> LayerBase:
    class_name = inner.get("class_name")
    if class_name not in _CELL_KIND:
        raise NotExact(f"a recurrent layer of class {short(class_name)} is not supported")
    config = inner.get("config") or {}
    _check_rnn_config(class_name, config)
    kind = _CELL_KIND[class_name]
    half = len(arrays) // 2 if backward is not None else len(arrays)
    params = _direction_weights(class_name, config, arrays[:half], "")
    if backward is not None:
        bconfig = backward.get("config") or {}
        if backward.get("class_name") != class_name or bool(bconfig.get("use_bias", True)) != bool(
            config.get("use_bias", True)
        ):
            raise NotExact("Bidirectional with a backward layer unlike the forward one")
        _check_rnn_config(class_name, {**bconfig, "go_backwards": False})
        if bconfig.get("activation", "tanh") != config.get("activation", "tanh"):
            raise NotExact("Bidirectional directions with different activations")
        if bool(bconfig.get("return_sequences")) != bool(config.get("return_sequences")):
            raise NotExact("Bidirectional directions disagree on return_sequences")
        params.update(_direction_weights(class_name, bconfig, arrays[half:], "_reverse"))
    kernel = arrays[0]
    extra: dict[str, Any] = {}
    if kind == "simple_rnn":
        extra["activation"] = config.get("activation", "tanh")
    entry.transforms.append(RECURRENT_KERNEL_TRANSPOSED)
    if kind == "gru":
        entry.transforms.append(GRU_GATES_FROM_KERAS)
    return _RNN_CLASSES[kind](
        **_base(entry),
        input_size=int(kernel.shape[0]),
        hidden_size=int(arrays[1].shape[0]),
        bidirectional=backward is not None,
        return_sequences=bool(config.get("return_sequences", False)),
        use_bias=bool(config.get("use_bias", True)),
        weights={name: tensors.add(entry.name, name, value) for name, value in params.items()},
        **extra,
    )


@KERAS_READ.register("SimpleRNN", "LSTM", "GRU", produces=("simple_rnn", "lstm", "gru"))
def _recurrent(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Kernels transposed to ``[gates*units, in]``; GRU gates z,r,h reordered to r,z,n."""
    _refuse_quantized(entry)
    inner = {"class_name": entry.class_name, "config": entry.config}
    return _rnn(entry, tensors, inner, entry.weights, None)


@KERAS_READ.register("Bidirectional", produces=("simple_rnn", "lstm", "gru"))
def _bidirectional(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``merge_mode='concat'`` only: forward weights then backward weights."""
    config = entry.config
    if config.get("merge_mode", "concat") != "concat":
        raise NotExact(
            f"Bidirectional(merge_mode={short(config.get('merge_mode'))}): only 'concat' maps to PyTorch"
        )
    inner = config.get("layer") or {}
    backward = config.get("backward_layer") or {
        "class_name": inner.get("class_name"),
        "config": inner.get("config") or {},
    }
    return _rnn(entry, tensors, inner, entry.weights, backward)


# -- merges and slicing -------------------------------------------------------------------------

_MERGES = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Average": "average",
    "Maximum": "maximum",
    "Minimum": "minimum",
}


def _is_op(entry: KerasLayerEntry) -> bool:
    return (entry.module or "").startswith("keras.src.ops")


@KERAS_READ.register(*_MERGES, produces=tuple(_MERGES.values()))
def _merge(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Merge layers (``keras.layers.Add``…) and the same ops written ``x + y`` in a Functional."""
    _expect_weights(entry, 0)
    if _is_op(entry) and entry.class_name == "Average":
        raise NotExact("keras.ops.average is a weighted mean over an axis, not the Average layer")
    if len(entry.inputs or []) < 2:
        raise NotExact(
            f"{entry.class_name} reads {len(entry.inputs or [])} tensor(s); weightio merges two "
            "or more layer outputs (a constant operand is not supported)"
        )
    return MergeLayer(**_base(entry), kind=_MERGES[entry.class_name])  # type: ignore[arg-type]


@KERAS_READ.register("Concatenate", produces=("concatenate",))
def _concatenate(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Concatenate(axis)``; the axis counts the batch axis in both Keras and the spec. On
    channels-last feature maps it becomes the canonical axis (-1 -> 1).
    """
    _expect_weights(entry, 0)
    axis = _single_axis(entry.config.get("axis", -1), "Concatenate")
    if entry.input_tags and all(tag == "channels" for tag in entry.input_tags):
        build = entry.raw.get("build_config") if entry.raw else None
        shapes = build.get("input_shape") if isinstance(build, dict) else None
        first = shapes[0] if isinstance(shapes, (list, tuple)) and shapes else None
        rank = len(first) if isinstance(first, (list, tuple)) else None
        axis = _canonical_axis(axis, rank)
    return ConcatenateLayer(**_base(entry), axis=axis)


def _is_full_slice(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("class_name") == "__slice__"
        and all((value.get("config") or {}).get(k) is None for k in ("start", "stop", "step"))
    )


@KERAS_READ.register("GetItem", produces=("last_step",))
def _get_item(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``x[:, -1]`` / ``x[:, -1, :]`` in a Functional model: a sequence's last step."""
    node = entry.raw.get("inbound_nodes") or [{}]
    args = node[0].get("args") if isinstance(node[0], dict) else None
    key = args[1] if isinstance(args, (list, tuple)) and len(args) == 2 else None
    if (
        isinstance(key, (list, tuple))
        and len(key) in (2, 3)
        and _is_full_slice(key[0])
        and key[1] == -1
        and all(_is_full_slice(k) for k in key[2:])
    ):
        return LastStepLayer(**_base(entry))
    raise NotExact(
        f"indexing with {short(key)}: weightio reads only a sequence's last step, x[:, -1]"
    )


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
    for key, value in (kwargs or {}).items():
        if key in ("attention_mask", "query_mask", "value_mask", "key_mask") and value is not None:
            raise NotExact(
                f"MultiHeadAttention called with {key}; weightio maps unmasked self-attention"
            )
        if key in ("use_causal_mask", "return_attention_scores") and value:
            raise NotExact(f"MultiHeadAttention called with {key}=True")
    if len(set(entry.inputs or [])) != 1:
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
    _expect_weights(entry, 8 if use_bias else 4)
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
    base = _base(entry)
    base["inputs"] = None if entry.inputs is None else [entry.inputs[0]]
    entry.transforms.append(
        "multi_head_attention: Keras [E, heads, dim] kernels packed into in_proj_weight [3E, E]"
    )
    return MultiHeadAttentionLayer(
        **base, embed_dim=int(e), num_heads=int(heads), use_bias=use_bias, **refs
    )
