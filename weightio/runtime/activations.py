"""Numpy implementations of every activation in the spec, with the canonical semantics.

These are the reference definitions (docs/conventions.md): the runtime uses them, and the
adapters' tests compare each framework's activation against them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from weightio.spec.activations import ActivationFn

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so neither branch overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    ex = np.exp(shifted)
    return ex / np.sum(ex, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _gelu(x: np.ndarray, approximate: bool) -> np.ndarray:
    if approximate:
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[x.dtype])(x / np.sqrt(2.0)))


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def activation_function(fn: ActivationFn) -> Callable[[np.ndarray], np.ndarray]:
    """Return the numpy function computing ``fn``."""
    name = fn.name
    table: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "linear": lambda x: x,
        "relu": lambda x: np.maximum(x, 0.0),
        "relu6": lambda x: np.clip(x, 0.0, 6.0),
        "leaky_relu": lambda x: np.where(x >= 0, x, x * fn.negative_slope),
        "elu": lambda x: np.where(x > 0, x, fn.alpha * np.expm1(np.minimum(x, 0.0))),
        "celu": lambda x: np.where(x > 0, x, fn.alpha * np.expm1(np.minimum(x, 0.0) / fn.alpha)),
        "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
        "gelu": lambda x: _gelu(x, bool(fn.approximate)),
        "sigmoid": _sigmoid,
        "log_sigmoid": lambda x: -_softplus(-x),
        "hard_sigmoid": _hard_sigmoid,
        "tanh": np.tanh,
        "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
        "softmax": lambda x: _softmax(x, fn.axis),
        "log_softmax": lambda x: _log_softmax(x, fn.axis),
        "softplus": _softplus,
        "softsign": lambda x: x / (1.0 + np.abs(x)),
        "silu": lambda x: x * _sigmoid(x),
        "hard_silu": lambda x: x * _hard_sigmoid(x),
        "mish": lambda x: x * np.tanh(_softplus(x)),
        "tanh_shrink": lambda x: x - np.tanh(x),
        "soft_shrink": lambda x: np.where(
            x > fn.threshold, x - fn.threshold, np.where(x < -fn.threshold, x + fn.threshold, 0.0)
        ),
        "hard_shrink": lambda x: np.where(np.abs(x) > fn.threshold, x, 0.0),
    }
    return table[name]


def apply_activation(fn: ActivationFn, x: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to ``x``."""
    return activation_function(fn)(x)
