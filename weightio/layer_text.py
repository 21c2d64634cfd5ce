"""Short, honest text for the spatial, normalisation, recurrent and graph kinds.

``FORMULAS`` (merged into ``weightio.explain.FORMULAS``) says what a layer computes from its
input ``x`` in the spec's own terms: feature maps are channels-first ``[C, *spatial]`` and axes
count the batch axis. ``detail`` (used by ``weightio.inspection``) gives the hyper-parameters a
reader checks first. Formulas name the operation, not every edge case: padding, dilation and
gate order are spelled out by the hyper-parameters and ``docs/conventions.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _act(layer: Any) -> tuple[str, str]:
    """``("relu(", ")")`` around a fused activation, or empty strings for linear."""
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "name", "linear")
    return ("", "") if name == "linear" else (f"{activation.describe()}(", ")")


def _plus_bias(layer: Any) -> str:
    return " + b" if getattr(layer, "bias", None) is not None else ""


def _conv(layer: Any) -> str:
    before, after = _act(layer)
    grouped = f", groups {layer.groups}" if getattr(layer, "groups", 1) != 1 else ""
    return f"{before}conv{layer.rank}d(x, W{grouped}){_plus_bias(layer)}{after}"


def _separable(layer: Any) -> str:
    before, after = _act(layer)
    return f"{before}pointwise(depthwise(x, W_dw), W_pw){_plus_bias(layer)}{after}"


def _transpose(layer: Any) -> str:
    before, after = _act(layer)
    return f"{before}conv_transpose{layer.rank}d(x, W){_plus_bias(layer)}{after}"


def _batch_norm(layer: Any) -> str:
    scale = " · weight" if layer.weight is not None else ""
    shift = " + bias" if layer.bias is not None else ""
    return (
        f"(x - running_mean) / sqrt(running_var + {layer.eps:g}){scale}{shift}"
        f"   (one statistic per index on axis {layer.axis})"
    )


def _recurrent(layer: Any) -> str:
    cell = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}[layer.kind]
    direction = "both directions, concatenated" if layer.bidirectional else "forward"
    steps = "every step's h" if layer.return_sequences else "the last step's h"
    stack = f"{layer.num_layers} stacked layers, " if layer.num_layers > 1 else ""
    return f"{cell} over x[:, t] ({stack}{direction}); returns {steps}"


_MERGE_TEXT = {
    "add": "x₀ + x₁ + …", "subtract": "x₀ - x₁", "multiply": "x₀ · x₁ · …",
    "average": "(x₀ + x₁ + …) / n", "maximum": "max(x₀, x₁, …)", "minimum": "min(x₀, x₁, …)",
}

FORMULAS: dict[str, Callable[[Any], str]] = {
    "conv": _conv,
    "separable_conv": _separable,
    "conv_transpose": _transpose,
    "pool": lambda l: f"{l.op}_pool{l.rank}d(x, size {tuple(l.pool_size)}, stride {tuple(l.strides)})",
    "global_pool": lambda l: f"{l.op} of x over its spatial axes{' (kept as size 1)' if l.keepdims else ''}",
    "zero_padding": lambda l: f"x padded with zeros {[tuple(p) for p in l.padding]} on its spatial axes",
    "upsampling": lambda l: f"x repeated {tuple(l.size)} times along its spatial axes (nearest)",
    "flatten": lambda l: f"x as a vector, read in {l.order.replace('_', '-')} order",
    "reshape": lambda l: f"x reshaped to {tuple(l.target_shape)}",
    "permute": lambda l: f"x with axes reordered to {tuple(l.dims)}",
    "batch_norm": _batch_norm,
    "layer_norm": lambda l: (
        f"(x - mean) / sqrt(var + {l.eps:g}) over the last {len(l.normalized_shape)} axis(es)"
        f"{' · weight' if l.weight is not None else ''}{' + bias' if l.bias is not None else ''}"
    ),
    "group_norm": lambda l: (
        f"(x - mean) / sqrt(var + {l.eps:g}) within each of {l.num_groups} channel groups"
        f"{' · weight' if l.weight is not None else ''}{' + bias' if l.bias is not None else ''}"
    ),
    "normalization": lambda l: f"(x - mean) / max(sqrt(variance), {l.eps:g}) on axis {l.axis}",
    "embedding": lambda l: "weight[x]   (one row per index)",
    "lstm": _recurrent,
    "gru": _recurrent,
    "simple_rnn": _recurrent,
    "concatenate": lambda l: f"[x₀, x₁, …] joined on axis {l.axis}",
    "last_step": lambda l: "x[:, -1]   (the sequence's last step)",
    "multi_head_attention": lambda l: f"softmax(Q·Kᵀ / √d)·V with {l.num_heads} heads, Q = K = V from x",
    **{kind: (lambda text: lambda l: text)(text) for kind, text in _MERGE_TEXT.items()},  # noqa: B023
}


def detail(layer: Any) -> str:
    """The hyper-parameters of a kind from this family, one line; empty for other kinds."""
    kind = getattr(layer, "kind", "")
    if kind in ("conv", "separable_conv", "conv_transpose"):
        text = (
            f"{layer.in_channels}->{layer.out_channels}, kernel {tuple(layer.kernel_size)}, "
            f"stride {tuple(layer.strides)}"
        )
        padding = getattr(layer, "padding", None)
        if padding is not None:
            text += f", padding {padding if isinstance(padding, str) else [tuple(p) for p in padding]}"
        if getattr(layer, "groups", 1) != 1:
            text += f", groups {layer.groups}"
        if layer.activation.name != "linear":
            text += f", activation={layer.activation.describe()}"
        return text
    if kind == "pool":
        return f"{layer.op}, size {tuple(layer.pool_size)}, stride {tuple(layer.strides)}, padding {layer.padding}"
    if kind == "global_pool":
        return f"{layer.op}, keepdims={layer.keepdims}"
    if kind == "batch_norm":
        return f"features={layer.num_features}, axis={layer.axis}, eps={layer.eps:g}"
    if kind in ("layer_norm", "group_norm"):
        shape = getattr(layer, "normalized_shape", None)
        size = f"shape={tuple(shape)}" if shape else f"groups={layer.num_groups}, channels={layer.num_channels}"
        return f"{size}, eps={layer.eps:g}"
    if kind == "embedding":
        return f"{layer.num_embeddings}x{layer.embedding_dim}"
    if kind in ("lstm", "gru", "simple_rnn"):
        text = f"in={layer.input_size}, hidden={layer.hidden_size}"
        if layer.num_layers > 1:
            text += f", layers={layer.num_layers}"
        if layer.bidirectional:
            text += ", bidirectional"
        return text + f", return_sequences={layer.return_sequences}"
    if kind == "flatten":
        return f"order={layer.order}"
    if kind == "concatenate":
        return f"axis={layer.axis}"
    if kind == "multi_head_attention":
        return f"embed={layer.embed_dim}, heads={layer.num_heads}"
    return ""
