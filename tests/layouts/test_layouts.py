"""Layout transforms are exact permutations, each the inverse of its partner (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from weightio.layouts import transforms as layouts


@pytest.mark.parametrize("shape", [(3, 2, 4), (3, 3, 2, 5), (2, 2, 2, 3, 4)])
def test_conv_kernel_round_trip(shape: tuple, rng: np.random.Generator) -> None:
    kernel = rng.standard_normal(shape).astype("float32")  # Keras [*k, in, out]
    canonical = layouts.conv_weight_from_keras(kernel)
    assert canonical.shape == (shape[-1], shape[-2], *shape[:-2])
    assert np.array_equal(layouts.conv_weight_to_keras(canonical), kernel)
    # element [*k, i, o] lands at [o, i, *k]
    idx = tuple(d - 1 for d in shape)
    assert canonical[(idx[-1], idx[-2], *idx[:-2])] == kernel[idx]


def test_depthwise_round_trip_and_channel_order(rng: np.random.Generator) -> None:
    kernel = rng.standard_normal((3, 2, 4, 3)).astype("float32")  # [kh, kw, in=4, m=3]
    canonical = layouts.depthwise_weight_from_keras(kernel)
    assert canonical.shape == (12, 1, 3, 2)
    assert np.array_equal(canonical[2 * 3 + 1, 0], kernel[:, :, 2, 1])  # channel c*m + j
    assert np.array_equal(layouts.depthwise_weight_to_keras(canonical, 4), kernel)


def test_transpose_kernel_round_trip(rng: np.random.Generator) -> None:
    kernel = rng.standard_normal((3, 2, 5, 4)).astype("float32")  # [*k, out, in]
    canonical = layouts.conv_transpose_weight_from_keras(kernel)
    assert canonical.shape == (4, 5, 3, 2)
    assert np.array_equal(layouts.conv_transpose_weight_to_keras(canonical), kernel)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 6), (2, 3, 2, 2)])
def test_channel_moves_are_inverse(shape: tuple, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, *shape))
    last = layouts.to_channels_last(x)
    assert last.shape == (2, *shape[1:], shape[0])
    assert np.array_equal(layouts.to_channels_first(last), x)
    assert layouts.shape_channels_first(layouts.shape_channels_last(shape)) == shape


@pytest.mark.parametrize("source,target", [("channels_last", "channels_first"), ("channels_first", "channels_last")])
def test_flatten_permutation_folds_into_dense_exactly(source: str, target: str, rng: np.random.Generator) -> None:
    fmap = (3, 4, 5)
    x = rng.standard_normal((2, *fmap))
    flat = {
        "channels_first": x.reshape(2, -1),
        "channels_last": np.moveaxis(x, 1, -1).reshape(2, -1),
    }
    weight = rng.standard_normal((7, 60))
    folded = layouts.dense_columns_for_flatten(weight, fmap, source=source, target=target)
    # same numbers, reordered: the dense reading target order computes what source order did
    assert np.array_equal(np.sort(folded, axis=None), np.sort(weight, axis=None))
    np.testing.assert_allclose(flat[target] @ folded.T, flat[source] @ weight.T, rtol=1e-12)
    back = layouts.dense_columns_for_flatten(folded, fmap, source=target, target=source)
    assert np.array_equal(back, weight)


def test_compose_and_inverse_permutations() -> None:
    x = np.arange(24).reshape(1, 2, 3, 4)
    a, b = (0, 2, 3, 1), (0, 3, 1, 2)
    assert np.array_equal(x.transpose(a).transpose(b), x.transpose(layouts.compose_permutation(a, b)))
    assert np.array_equal(x.transpose(a).transpose(layouts.inverse_permutation(a)), x)


@pytest.mark.parametrize(
    "size,kernel,stride,dilation,want",
    [(8, 3, 1, 1, (1, 1)), (8, 4, 1, 1, (1, 2)), (7, 2, 2, 1, (0, 1)), (8, 2, 2, 1, (0, 0)),
     (9, 3, 2, 1, (1, 1)), (10, 3, 1, 2, (2, 2)), (5, 4, 3, 1, (1, 1))],
)
def test_same_padding_puts_the_odd_element_last(size: int, kernel: int, stride: int, dilation: int, want: tuple) -> None:
    assert layouts.same_padding(size, kernel, stride, dilation) == want
    before, after = want
    span = (kernel - 1) * dilation + 1
    assert (size + before + after - span) // stride + 1 == -(-size // stride)
