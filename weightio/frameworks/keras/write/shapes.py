"""Keras's output-shape rules for the layers the write mappings emit, on plain shape tuples.

A ``.keras`` file records every layer's build shape and every Functional edge's tensor shape;
written without Keras, weightio computes them the way Keras does. Shapes carry no batch axis,
feature maps are channels-last, and a free dimension (``None``) stays free.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from weightio.frameworks.keras.read.conv import keras_transpose_cropping
from weightio.frameworks.keras.write.serialized import Shape


def _spatial(shape: Shape, rank: int) -> tuple[list[int | None], int | None]:
    """The spatial sizes and the channels of a channels-last feature map of ``rank`` axes."""
    if len(shape) != rank + 1:
        raise ValueError(f"a rank-{rank} feature map has {rank + 1} axes, got shape {shape}")
    return list(shape[:-1]), shape[-1]


def window_length(size: int | None, window: int, stride: int, dilation: int, padding: str) -> int | None:
    """Output length of a convolution or pooling window: ``valid`` or ``same`` (TensorFlow rule)."""
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    effective = (window - 1) * dilation + 1
    return (size - effective) // stride + 1


def windowed(
    shape: Shape,
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: str,
    channels: int | None,
) -> Shape:
    """Output of a ``Conv*D``/``*Pooling*D``: each spatial axis windowed, then ``channels``."""
    sizes, own = _spatial(shape, len(window))
    out = [window_length(n, k, s, d, padding) for n, k, s, d in zip(sizes, window, strides, dilation)]
    return (*out, own if channels is None else channels)


def transposed(
    shape: Shape,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: str,
    output_padding: Sequence[int] | None,
    channels: int,
) -> Shape:
    """Output of a ``Conv*DTranspose``: the full ``(n-1)s + (k-1)d + 1`` less Keras's crops."""
    sizes, _ = _spatial(shape, len(kernel))
    out: list[int | None] = []
    for i, n in enumerate(sizes):
        k, s, d = kernel[i], strides[i], dilation[i]
        begin, end = keras_transpose_cropping(k, s, d, padding, None if output_padding is None else output_padding[i])
        out.append(None if n is None else (n - 1) * s + (k - 1) * d + 1 - begin - end)
    return (*out, channels)


def padded(shape: Shape, pads: Sequence[tuple[int, int]]) -> Shape:
    """Output of ``ZeroPadding*D`` (positive pads) or ``Cropping*D`` (negative pads)."""
    sizes, channels = _spatial(shape, len(pads))
    out = [None if n is None else n + b + a for n, (b, a) in zip(sizes, pads)]
    return (*out, channels)


def upsampled(shape: Shape, size: Sequence[int]) -> Shape:
    """Output of ``UpSampling*D``: each spatial axis repeated ``size`` times."""
    sizes, channels = _spatial(shape, len(size))
    return (*[None if n is None else n * f for n, f in zip(sizes, size)], channels)


def pooled_globally(shape: Shape, rank: int, keepdims: bool) -> Shape:
    """Output of ``Global*Pooling*D``: the channels, with 1-sized spatial axes if ``keepdims``."""
    _, channels = _spatial(shape, rank)
    return (*([1] * rank), channels) if keepdims else (channels,)


def flattened(shape: Shape) -> Shape:
    """Output of ``Flatten``: one axis of every element (free when any axis is)."""
    return (None if any(d is None for d in shape) else prod(shape),)  # type: ignore[arg-type]


def permuted(shape: Shape, dims: Sequence[int]) -> Shape:
    """Output of ``Permute(dims)`` (``dims`` count from 1, the batch axis excluded)."""
    return tuple(shape[d - 1] for d in dims)
