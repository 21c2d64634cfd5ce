"""Pure numpy layout transforms between framework layouts and the canonical one.

Each transform is exact (a permutation of elements, never arithmetic), so values survive
bit for bit. docs/conventions.md has the table; tests run every transform both ways.
"""

from __future__ import annotations

import numpy as np

#: The line recorded in provenance when a Keras Dense kernel is transposed.
DENSE_KERNEL_TRANSPOSED = "dense.weight: Keras kernel [in, out] transposed to canonical [out, in]"


def dense_weight_from_keras(kernel: np.ndarray) -> np.ndarray:
    """Keras Dense kernel ``[in, out]`` -> canonical weight ``[out, in]``.

    A transposed *view*, not a copy: a kernel memory-mapped from a weights file stays lazy, and
    writers make the C-order bytes one tensor at a time, so reading a large Keras file never
    holds a transposed copy of the whole model.
    """
    return np.asarray(kernel).T


def dense_weight_to_keras(weight: np.ndarray) -> np.ndarray:
    """Canonical weight ``[out, in]`` -> Keras Dense kernel ``[in, out]``.

    A transposed view, as in the other direction: the Keras writers set or write kernels one at
    a time, so a memory-mapped archive is never held transposed whole.
    """
    return np.asarray(weight).T


# -- convolution kernels ----------------------------------------------------------------------
# Keras keeps kernels spatial-first, PyTorch (and the canonical form) channels-first. Each pair
# below is a transpose (and for depthwise kernels a reshape); each is the other's exact inverse.

CONV_KERNEL_TRANSPOSED = "conv.weight: Keras kernel [*k, in/groups, out] -> canonical [out, in/groups, *k]"
DEPTHWISE_KERNEL_RESHAPED = (
    "conv.weight (depthwise): Keras kernel [*k, in, multiplier] -> canonical [in*multiplier, 1, *k]"
)
TRANSPOSE_KERNEL_TRANSPOSED = (
    "conv_transpose.weight: Keras kernel [*k, out, in] -> canonical [in, out, *k]"
)
FLATTEN_ROWS_PERMUTED = (
    "dense.weight after flatten: columns permuted between channels-last and channels-first order"
)


def conv_weight_from_keras(kernel: np.ndarray) -> np.ndarray:
    """Keras ``Conv*D`` kernel ``[*k, in/groups, out]`` -> canonical ``[out, in/groups, *k]``."""
    kernel = np.asarray(kernel)
    rank = kernel.ndim - 2
    return np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))


def conv_weight_to_keras(weight: np.ndarray) -> np.ndarray:
    """Canonical ``[out, in/groups, *k]`` -> Keras ``[*k, in/groups, out]`` (a view, as for dense)."""
    weight = np.asarray(weight)
    rank = weight.ndim - 2
    return weight.transpose(*range(2, rank + 2), 1, 0)


def depthwise_weight_from_keras(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise kernel ``[*k, in, m]`` -> canonical grouped ``[in*m, 1, *k]``.

    Output channel ``c*m + j`` is input channel ``c``'s ``j``-th filter in both frameworks.
    """
    kernel = np.asarray(kernel)
    rank = kernel.ndim - 2
    k, (cin, mult) = kernel.shape[:rank], kernel.shape[rank:]
    flat = kernel.reshape(*k, cin * mult)
    return np.ascontiguousarray(flat.transpose(rank, *range(rank))[:, None])


def depthwise_weight_to_keras(weight: np.ndarray, in_channels: int) -> np.ndarray:
    """Canonical grouped ``[in*m, 1, *k]`` -> Keras depthwise ``[*k, in, m]``."""
    weight = np.asarray(weight)
    rank = weight.ndim - 2
    mult = weight.shape[0] // in_channels
    k = weight.shape[2:]
    moved = weight[:, 0].transpose(*range(1, rank + 1), 0)  # [*k, in*m]
    return np.ascontiguousarray(moved.reshape(*k, in_channels, mult))


def conv_transpose_weight_from_keras(kernel: np.ndarray) -> np.ndarray:
    """Keras ``Conv*DTranspose`` kernel ``[*k, out, in]`` -> canonical ``[in, out, *k]``."""
    kernel = np.asarray(kernel)
    rank = kernel.ndim - 2
    return np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))


def conv_transpose_weight_to_keras(weight: np.ndarray) -> np.ndarray:
    """Canonical ``[in, out, *k]`` -> Keras ``[*k, out, in]`` (a view, as for dense)."""
    weight = np.asarray(weight)
    rank = weight.ndim - 2
    return weight.transpose(*range(2, rank + 2), 1, 0)


# -- activation layouts -----------------------------------------------------------------------


def channels_last_axes(ndim: int) -> tuple[int, ...]:
    """The transpose taking ``[N, C, *S]`` to ``[N, *S, C]``."""
    return (0, *range(2, ndim), 1)


def channels_first_axes(ndim: int) -> tuple[int, ...]:
    """The transpose taking ``[N, *S, C]`` to ``[N, C, *S]``."""
    return (0, ndim - 1, *range(1, ndim - 1))


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """``[N, C, *S]`` -> ``[N, *S, C]`` (a copy; values untouched)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(channels_last_axes(x.ndim)))


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """``[N, *S, C]`` -> ``[N, C, *S]`` (a copy; values untouched)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(channels_first_axes(x.ndim)))


def shape_channels_last(shape: tuple) -> tuple:
    """A shape without batch, ``(C, *S)`` -> ``(*S, C)``."""
    return (*shape[1:], shape[0])


def shape_channels_first(shape: tuple) -> tuple:
    """A shape without batch, ``(*S, C)`` -> ``(C, *S)``."""
    return (shape[-1], *shape[:-1])


def flatten_permutation(shape: tuple[int, ...], *, source: str, target: str) -> np.ndarray:
    """Indices ``p`` with ``flat_source = flat_target[p]`` for a ``(C, *S)`` feature map.

    ``source``/``target`` are ``channels_first`` or ``channels_last`` flatten orders.
    """
    index = np.arange(int(np.prod(shape))).reshape(shape)  # canonical [C, *S] element ids
    orders = {
        "channels_first": index.reshape(-1),
        "channels_last": index.transpose(*range(1, len(shape)), 0).reshape(-1),
    }
    src, tgt = orders[source], orders[target]
    position_in_target = np.empty_like(tgt)
    position_in_target[tgt] = np.arange(tgt.size)
    return position_in_target[src]


def dense_columns_for_flatten(
    weight: np.ndarray, shape: tuple[int, ...], *, source: str, target: str
) -> np.ndarray:
    """Permute a dense ``weight [out, in]``'s columns so it reads ``target``-order features.

    ``W @ flat_source == W' @ flat_target`` exactly: a permutation, no arithmetic.
    """
    weight = np.asarray(weight)
    p = flatten_permutation(shape, source=source, target=target)
    out = np.empty_like(weight)
    out[:, p] = weight
    return out


def compose_permutation(first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...]:
    """The single transpose equal to ``x.transpose(first).transpose(second)``."""
    return tuple(first[i] for i in second)


def inverse_permutation(perm: tuple[int, ...]) -> tuple[int, ...]:
    """The transpose undoing ``perm``."""
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


# -- 'same' padding ---------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras 'same' padding ``(before, after)``: the odd element goes at the end."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2
