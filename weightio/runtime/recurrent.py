"""Numpy reference of the sequence kinds: embeddings and recurrent layers (SimpleRNN, LSTM, GRU)."""

from __future__ import annotations

import numpy as np

from weightio.errors import InvalidInputError
from weightio.runtime.base import RUNTIME
from weightio.runtime.norm import Params
from weightio.spec.recurrent import EmbeddingLayer, RecurrentBase


@RUNTIME.register("embedding")
def _embedding(layer: EmbeddingLayer, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = np.asarray(xs[0])
    if x.dtype.kind not in "iu":
        raise InvalidInputError(
            f"an embedding reads integer indices, received dtype {x.dtype}", layer=layer.name
        )
    if x.size and (x.min() < 0 or x.max() >= layer.num_embeddings):
        raise InvalidInputError(
            f"indices must lie in [0, {layer.num_embeddings}); received values from {x.min()} to {x.max()}",
            layer=layer.name,
        )
    return params["weight"][x]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _cell(
    kind: str, layer: RecurrentBase, p: Params, suffix: str, x_t: np.ndarray, state: tuple
) -> tuple:
    """One step of one direction of one stacked layer; returns the new state (h first)."""
    w_ih, w_hh = p[f"weight_ih{suffix}"], p[f"weight_hh{suffix}"]
    b_ih = p.get(f"bias_ih{suffix}", 0.0)
    b_hh = p.get(f"bias_hh{suffix}", 0.0)
    gi = x_t @ w_ih.T + b_ih
    gh = state[0] @ w_hh.T + b_hh
    if kind == "simple_rnn":
        pre = gi + gh
        return (np.tanh(pre) if layer.activation == "tanh" else np.maximum(pre, 0.0),)  # type: ignore[attr-defined]
    if kind == "lstm":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = _sigmoid(f) * state[1] + _sigmoid(i) * np.tanh(g)
        return (_sigmoid(o) * np.tanh(c), c)
    ir, iz, in_ = np.split(gi, 3, axis=-1)
    hr, hz, hn = np.split(gh, 3, axis=-1)
    r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
    n = np.tanh(in_ + r * hn)
    return ((1.0 - z) * n + z * state[0],)


def _direction(
    layer: RecurrentBase, p: Params, suffix: str, x: np.ndarray, reverse: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Run one direction over batch-first ``x``; return outputs in time order and final h."""
    n, steps = x.shape[:2]
    zeros = np.zeros((n, layer.hidden_size))
    state: tuple = (zeros, zeros) if layer.kind == "lstm" else (zeros,)
    outputs = [zeros] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        state = _cell(layer.kind, layer, p, suffix, x[:, t], state)
        outputs[t] = state[0]
    return np.stack(outputs, axis=1) if steps else np.zeros((n, 0, layer.hidden_size)), state[0]


def _recurrent(layer: RecurrentBase, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0] if layer.batch_first else np.swapaxes(xs[0], 0, 1)
    if x.ndim != 3:
        raise InvalidInputError(
            f"a {layer.kind} layer reads (batch, time, features); received rank {x.ndim}",
            layer=layer.name,
        )
    finals: list[np.ndarray] = []
    for k in range(layer.num_layers):
        outs, finals = [], []
        for suffix, reverse in (("", False), ("_reverse", True))[: layer.directions]:
            seq, final = _direction(layer, params, f"_l{k}{suffix}", x, reverse)
            outs.append(seq)
            finals.append(final)
        x = np.concatenate(outs, axis=-1)
    if not layer.return_sequences:
        return np.concatenate(finals, axis=-1)
    return x if layer.batch_first else np.swapaxes(x, 0, 1)


for _kind in ("simple_rnn", "lstm", "gru"):
    RUNTIME.register(_kind)(_recurrent)
