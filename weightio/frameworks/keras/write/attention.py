"""Multi-head self-attention -> Keras MultiHeadAttention as data.

``MultiHeadAttention`` keeps its variables in four ``EinsumDense`` sublayers (``query_dense``,
``key_dense``, ``value_dense``, ``output_dense``) and tracks a softmax and a dropout layer with
none; ``model.weights.h5`` nests them all, which the mapping's ``nested`` groups describe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError
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
    ZEROS,
    batch_shape,
    layer_config,
    none_of,
)

#: The names Keras gives the projections (query_dense, key_dense… in ``layer.weights`` order).
_PROJECTION_NAMES = ("query", "key", "value", "attention_output")


@KERAS_WRITE.register("multi_head_attention")
def _attention(layer: Any, ctx: WriteContext) -> list[KerasLayer]:
    """MultiHeadAttention(num_heads, key_dim=E/heads) called as ``mha(x, x)``."""
    e, heads = layer.embed_dim, layer.num_heads
    d = e // heads
    steps = ctx.shape[0] if ctx.shape else None
    if d == 1 and steps in (None, heads):
        # Found by the generative torch test: with key_dim 1 and as many steps as heads, Keras
        # 3's MultiHeadAttention returns other numbers than its own einsums compute (its
        # query_dense called as a layer differs from ops.einsum with the same kernel).
        raise UnsupportedLayerError(
            f"{heads} heads of width 1 over {steps or 'a free number of'} steps: Keras's "
            "MultiHeadAttention computes other numbers than attention for key_dim=1 when the "
            "sequence length equals num_heads, so weightio does not write it; use fewer heads",
            layer=layer.name,
        )
    dtype = keras_float_dtype(layer, layer.out_proj_weight)
    config = layer_config(
        ctx.name_of(layer), dtype, num_heads=heads, key_dim=d, value_dim=d, dropout=0.0,
        use_bias=layer.use_bias, use_gate=False, output_shape=None, attention_axes=[1],
        sliding_window=None, kernel_initializer=GLOROT, bias_initializer=ZEROS,
        **none_of("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                  "kernel_constraint", "bias_constraint"),
        seed=None,
    )
    weights = attention_weights(layer, lambda ref: layer_array(ctx, ref))
    per = 2 if layer.use_bias else 1
    nested = [
        (attribute, VariableGroup(name, tuple(range(i * per, (i + 1) * per))))
        for i, (attribute, name) in enumerate(zip(NESTED_WEIGHTS["MultiHeadAttention"], _PROJECTION_NAMES))
    ]
    nested += [("_dropout_layer", VariableGroup("dropout")), ("_softmax", VariableGroup("softmax"))]
    shape = batch_shape(ctx.shape)
    build = {"shapes_dict": {"query_shape": shape, "value_shape": shape}}
    ctx.dtype = dtype
    # The spec's key padding mask is Keras's value_mask ((N, S), key j attended iff nonzero);
    # Keras expands it to the [N, 1, S] attention mask itself.
    call = "query_value_mask" if layer.key_padding_mask else "query_value"
    return [KerasLayer("MultiHeadAttention", config, ctx.shape, weights, build=build,
                       call=call, nested=tuple(nested))]


def attention_weights(layer: Any, get: Any) -> list[np.ndarray]:
    """Packed ``in_proj_weight [3E, E]`` (or separate ``q/k/v_proj_weight [E, E]``) -> Keras's
    query/key/value kernels ``[E, heads, dim]``.
    """
    e, heads = layer.embed_dim, layer.num_heads
    d = e // heads
    if layer.separate:
        blocks = [get(getattr(layer, f"{p}_proj_weight")) for p in "qkv"]
        biases = [get(getattr(layer, f"{p}_proj_bias")) for p in "qkv"] if layer.use_bias else []
    else:
        w_in = get(layer.in_proj_weight)
        blocks = [w_in[block * e : (block + 1) * e] for block in range(3)]
        b_in = get(layer.in_proj_bias) if layer.use_bias else None
        biases = [b_in[block * e : (block + 1) * e] for block in range(3)] if layer.use_bias else []
    weights = []
    for block in range(3):
        weights.append(np.ascontiguousarray(blocks[block].T.reshape(e, heads, d)))
        if layer.use_bias:
            weights.append(np.ascontiguousarray(biases[block].reshape(heads, d)))
    weights.append(np.ascontiguousarray(get(layer.out_proj_weight).T.reshape(heads, d, e)))
    if layer.use_bias:
        weights.append(get(layer.out_proj_bias))
    return weights
