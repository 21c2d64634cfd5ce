"""Exact layout transforms of recurrent weights between Keras and the canonical (torch) form.

Kernels are transposed (Keras ``[in, gates*units]`` -> canonical ``[gates*units, in]``) and GRU
gate blocks reordered (Keras ``z, r, h`` <-> canonical ``r, z, n``): permutations, bit-exact.
The one place arithmetic happens is writing two canonical biases into Keras's single one
(``bias = bias_ih + bias_hh`` for LSTM and SimpleRNN): exact when ``bias_hh`` is zero (any
archive read from Keras), otherwise exact to float32 rounding of one addition.
"""

from __future__ import annotations

import numpy as np

RECURRENT_KERNEL_TRANSPOSED = (
    "recurrent: Keras kernel [in, gates*units] and recurrent_kernel [units, gates*units] "
    "transposed to canonical weight_ih/weight_hh [gates*units, *]; Keras's one bias is bias_ih, "
    "bias_hh = 0"
)
GRU_GATES_FROM_KERAS = "gru: Keras gate blocks z, r, h reordered to canonical r, z, n"

#: Keras GRU blocks (z, r, h) -> canonical (r, z, n): take Keras blocks 1, 0, 2. Self-inverse.
_GRU_ORDER = (1, 0, 2)


def _blocks(array: np.ndarray, order: tuple[int, ...], axis: int) -> np.ndarray:
    parts = np.split(np.asarray(array), len(order), axis=axis)
    return np.ascontiguousarray(np.concatenate([parts[i] for i in order], axis=axis))


def _t(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array).T)


def simple_rnn_from_keras(
    kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Keras SimpleRNN / LSTM (same gate order i, f, c, o) -> canonical tensors of one direction."""
    out = {"weight_ih": _t(kernel), "weight_hh": _t(recurrent)}
    if bias is not None:
        out["bias_ih"] = np.ascontiguousarray(bias)
        out["bias_hh"] = np.zeros_like(bias)
    return out


lstm_from_keras = simple_rnn_from_keras


def gru_from_keras(
    kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Keras GRU (reset_after=True, bias ``[2, 3u]``) -> canonical, gates reordered."""
    out = {
        "weight_ih": _blocks(_t(kernel), _GRU_ORDER, 0),
        "weight_hh": _blocks(_t(recurrent), _GRU_ORDER, 0),
    }
    if bias is not None:
        bias = np.asarray(bias)
        if bias.ndim != 2 or bias.shape[0] != 2:
            raise ValueError(f"a reset_after GRU bias is [2, 3*units]; received {list(bias.shape)}")
        out["bias_ih"] = _blocks(bias[0], _GRU_ORDER, 0)
        out["bias_hh"] = _blocks(bias[1], _GRU_ORDER, 0)
    return out


def recurrent_to_keras(kind: str, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Canonical tensors of one direction (keys weight_ih, weight_hh[, bias_ih, bias_hh]) ->
    the Keras layer's ``[kernel, recurrent_kernel(, bias)]``.
    """
    if kind == "gru":
        weights = [
            _t(_blocks(params["weight_ih"], _GRU_ORDER, 0)),
            _t(_blocks(params["weight_hh"], _GRU_ORDER, 0)),
        ]
        if "bias_ih" in params:
            weights.append(
                np.ascontiguousarray(
                    np.stack(
                        [
                            _blocks(params["bias_ih"], _GRU_ORDER, 0),
                            _blocks(params["bias_hh"], _GRU_ORDER, 0),
                        ]
                    )
                )
            )
        return weights
    weights = [_t(params["weight_ih"]), _t(params["weight_hh"])]
    if "bias_ih" in params:
        bias_hh = params["bias_hh"]
        # The one arithmetic step: exact when bias_hh is zero, else float rounding of one add.
        weights.append(
            params["bias_ih"] + bias_hh
            if np.any(bias_hh)
            else np.array(params["bias_ih"], copy=True)
        )
    return weights
