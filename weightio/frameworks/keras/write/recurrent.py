"""Embedding and recurrent spec kinds -> Keras layers as data.

A Keras RNN keeps its variables in its ``cell`` (``layers/lstm/cell/vars/0…`` in
``model.weights.h5``), and ``Bidirectional`` in its ``forward_layer`` and ``backward_layer``:
the mappings say so with each layer's ``nested`` groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.keras.nesting import NESTED_WEIGHTS
from weightio.frameworks.keras.write.base import (
    KERAS_WRITE,
    KerasLayer,
    VariableGroup,
    WriteContext,
    layer_array,
)
from weightio.frameworks.keras.write.norm import keras_float_dtype
from weightio.frameworks.keras.write.serialized import (
    GLOROT,
    ORTHOGONAL,
    ZEROS,
    Shape,
    build_config,
    initializer,
    layer_config,
    none_of,
)
from weightio.layouts.recurrent import recurrent_to_keras
from weightio.spec.recurrent import EmbeddingLayer, RecurrentBase


@KERAS_WRITE.register("embedding")
def _embedding(layer: EmbeddingLayer, ctx: WriteContext) -> list[KerasLayer]:
    """Embedding(input_dim, output_dim), never masking."""
    dtype = keras_float_dtype(layer, layer.weight)
    config = layer_config(
        ctx.name_of(layer), dtype, input_dim=layer.num_embeddings, output_dim=layer.embedding_dim,
        embeddings_initializer=initializer("RandomUniform", seed=None, minval=-0.05, maxval=0.05),
        **none_of("embeddings_regularizer", "activity_regularizer", "embeddings_constraint"),
        mask_zero=False, quantization_config=None,
    )
    ctx.dtype = dtype
    out = (*ctx.shape, layer.embedding_dim)
    return [KerasLayer("Embedding", config, out, [layer_array(ctx, layer.weight)], build=build_config(ctx.shape))]


_RNN_CLASS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
_CELL_NAME = {"simple_rnn": "simple_rnn_cell", "lstm": "lstm_cell", "gru": "gru_cell"}


def _rnn_config(
    layer: RecurrentBase, name: str, dtype: str, sequences: bool, *, backwards: bool = False,
    zero_output_for_mask: bool = False,
) -> dict[str, Any]:
    """The config of a ``SimpleRNN``/``LSTM``/``GRU`` computing one direction of ``layer``."""
    fields: dict[str, Any] = {
        "return_sequences": sequences, "return_state": False, "go_backwards": backwards,
        "stateful": False, "unroll": False, "zero_output_for_mask": zero_output_for_mask,
        "units": layer.hidden_size, "activation": getattr(layer, "activation", "tanh"),
    }
    if layer.kind != "simple_rnn":
        fields["recurrent_activation"] = "sigmoid"
    fields.update(use_bias=layer.use_bias, kernel_initializer=GLOROT, recurrent_initializer=ORTHOGONAL,
                  bias_initializer=ZEROS)
    if layer.kind == "lstm":
        fields["unit_forget_bias"] = True
    fields.update(none_of(
        "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
        "kernel_constraint", "recurrent_constraint", "bias_constraint",
    ))
    fields.update(dropout=0.0, recurrent_dropout=0.0)
    if layer.kind == "gru":
        fields["reset_after"] = True
    if layer.kind != "simple_rnn":
        fields["seed"] = None
    return layer_config(name, dtype, **fields)


def _with_cell(name: str, kind: str, first: int, count: int) -> VariableGroup:
    """An RNN layer's weights group: nothing of its own, its cell's variables under ``cell``."""
    cell = VariableGroup(_CELL_NAME[kind], tuple(range(first, first + count)))
    return VariableGroup(name, (), ((NESTED_WEIGHTS[_RNN_CLASS[kind]][0], cell),))


def _recurrent_layer(
    layer: RecurrentBase, archive: Archive, k: int, dtype: str, name: str, shape: Shape
) -> KerasLayer:
    """Stacked layer ``k`` as a Keras layer (wrapped in Bidirectional when two directions)."""
    cls = _RNN_CLASS[layer.kind]
    sequences = layer.return_sequences or k < layer.num_layers - 1
    weights = _recurrent_weights(layer, archive, k)
    width = layer.hidden_size * layer.directions
    out = (*shape[:-1], width) if sequences else (width,)
    build = build_config(shape)
    if not layer.bidirectional:
        config = _rnn_config(layer, name, dtype, sequences)
        rnn = KerasLayer(cls, config, out, weights, build=build, call_kwargs={"training": False, "mask": None})
        rnn.nested = _with_cell(name, layer.kind, 0, len(weights)).children
        return rnn
    half = len(weights) // 2
    # Bidirectional wraps the layers it names forward_* and backward_* (zero_output_for_mask
    # follows return_sequences, as Keras forces it).
    forward = _rnn_config(layer, f"forward_{name}", dtype, sequences, zero_output_for_mask=sequences)
    backward = _rnn_config(layer, f"backward_{name}", dtype, sequences, backwards=True,
                           zero_output_for_mask=sequences)
    config = layer_config(
        name, dtype, merge_mode="concat",
        layer={"module": "keras.layers", "class_name": cls, "config": forward,
               "registered_name": None, "build_config": build},
        backward_layer={"module": "keras.layers", "class_name": cls, "config": backward,
                        "registered_name": None, "build_config": build},
    )
    wrapper = KerasLayer("Bidirectional", config, out, weights, build=build, call_kwargs={"mask": None})
    forward_attr, backward_attr = NESTED_WEIGHTS["Bidirectional"]
    wrapper.nested = (
        (forward_attr, _with_cell(forward["name"], layer.kind, 0, half)),
        (backward_attr, _with_cell(backward["name"], layer.kind, half, half)),
    )
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


@KERAS_WRITE.register("simple_rnn", "lstm", "gru")
def _recurrent(layer: RecurrentBase, ctx: WriteContext) -> list[KerasLayer]:
    """One Keras layer per stacked layer; two canonical biases summed into Keras's one."""
    if not layer.batch_first:
        raise UnsupportedLayerError(
            f"this {layer.kind} reads time-major (T, N, F) input (torch batch_first=False); Keras "
            "treats axis 0 as the batch. Build the PyTorch model with batch_first=True",
            layer=layer.name,
        )
    dtype = keras_float_dtype(layer, layer.weights["weight_ih_l0"])
    base = ctx.name_of(layer)
    built: list[KerasLayer] = []
    shape = ctx.shape
    for k in range(layer.num_layers):
        name = base if k == 0 else ctx.names.fresh(f"{base}_l{k}")
        built.append(_recurrent_layer(layer, ctx.archive, k, dtype, name, shape))
        shape = built[-1].output_shape
    ctx.dtype = dtype
    return built
