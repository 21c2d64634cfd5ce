"""Keras sequence layers -> spec layers: Embedding, SimpleRNN, LSTM, GRU, Bidirectional."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import NotExact, short
from weightio.frameworks.keras.read.base import (
    KERAS_READ,
    KerasLayerEntry,
    expect_weights,
    layer_fields,
    refuse_quantized,
)
from weightio.layouts.recurrent import (
    GRU_GATES_FROM_KERAS,
    RECURRENT_KERNEL_TRANSPOSED,
    gru_from_keras,
    lstm_from_keras,
    simple_rnn_from_keras,
)
from weightio.spec.base import LayerBase
from weightio.spec.recurrent import EmbeddingLayer, GRULayer, LSTMLayer, SimpleRNNLayer

# -- embedding and recurrent --------------------------------------------------------------------


@KERAS_READ.register("Embedding", produces=("embedding",))
def _embedding(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``embeddings [input_dim, output_dim]`` is canonical already; masking is refused."""
    refuse_quantized(entry)
    expect_weights(entry, 1)
    if entry.config.get("mask_zero"):
        raise NotExact(
            "Embedding(mask_zero=True) makes the layers after it skip padded steps, which the "
            "spec does not record; build it with mask_zero=False to convert"
        )
    table = entry.weights[0]
    return EmbeddingLayer(
        **layer_fields(entry),
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
        **layer_fields(entry),
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
    refuse_quantized(entry)
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
