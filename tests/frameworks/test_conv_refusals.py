"""Spatial settings with no exact equivalent are refused by name, never approximated."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

torch = pytest.importorskip("torch")

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402

nn = torch.nn


@pytest.mark.parametrize(
    "module,match",
    [
        (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.MaxPool2d(2, dilation=2), "dilated pooling"),
        (nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
        (nn.Upsample(scale_factor=2, mode="bilinear"), "only 'nearest'"),
        (nn.AdaptiveAvgPool2d(3), "divides the input size"),
        (nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), "last window is partial"),
    ],
    ids=["reflect", "dilated_pool", "divisor", "bilinear", "adaptive3", "avg_ceil_partial"],
)
def test_torch_refusals_name_the_layer(module: object, match: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=match) as info:
        weightio.read(nn.Sequential(module), example_input=torch.zeros(1, 2, 8, 8))
    assert info.value.layer == "0"


def test_view_with_a_constant_batch_is_refused() -> None:
    class Fixed(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return x.view(2, 8)

    with pytest.raises(UnsupportedLayerError, match="batch as -1"):
        weightio.read(Fixed(), example_input=torch.zeros(2, 2, 4))


def test_keras_dense_on_a_feature_map_reads_through_a_permute() -> None:
    """A Dense on a channels-last map computes on its channels: the reader records the exact
    permute to the plain form, so every framework computes the same numbers.
    """
    keras = pytest.importorskip("keras")
    model = keras.Sequential(
        [keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 2), keras.layers.Dense(5)]
    )
    archive = weightio.read(model)
    kinds = [layer.kind for layer in archive.spec.layers]
    assert kinds == ["conv", "permute", "dense"]
    data = np.random.default_rng(0).standard_normal((2, 4, 4, 2)).astype("float32")
    reference = np.asarray(model(data))
    x_cf = np.ascontiguousarray(np.moveaxis(data, -1, 1))
    np.testing.assert_allclose(weightio.run(archive, x_cf), reference, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        got = weightio.to_torch(archive)(torch.from_numpy(x_cf)).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


def test_runtime_checks_channels_first_input() -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3)])
    archive = weightio.read(model)
    with pytest.raises(weightio.errors.InvalidInputError, match=r"\(batch, 2, 6, 6\)"):
        weightio.run(archive, np.zeros((1, 6, 6, 2), "float32"))  # channels-last: refused


def test_arithmetic_on_the_batch_size_is_refused_by_name() -> None:
    """Sizes are settled for the traced input, but the batch stays free: computing with it
    (here folding it into the channels) has no fixed-shape equivalent."""

    class Folds(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return x.view(x.size(0) * 2, -1)

    with pytest.raises(UnsupportedLayerError, match="batch size") as info:
        weightio.read(Folds(), example_input=torch.zeros(2, 2, 4))
    assert info.value.layer == "mul"


def test_a_size_assert_is_checked_on_the_traced_input() -> None:
    class Checks(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            torch._assert(x.size(1) == 3, "expected 3 channels")
            return torch.relu(x)

    weightio.read(Checks(), example_input=torch.zeros(2, 3, 4))  # holds: folded away
    with pytest.raises(weightio.errors.TraceError, match="expected 3 channels"):
        weightio.read(Checks(), example_input=torch.zeros(2, 2, 4))


def test_keras_pad_other_than_minus_inf_stays_opaque() -> None:
    """weightio reads back its own -inf Pad before a max pooling; a zero or reflect pad written
    with keras.ops.pad is not that, and stays opaque rather than misread."""
    keras = pytest.importorskip("keras")
    inputs = keras.Input((4, 4, 2))
    padded = keras.ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
    model = keras.Model(inputs, keras.layers.MaxPooling2D(2)(padded))
    kinds = [layer.kind for layer in weightio.read(model).spec.layers]
    assert kinds == ["opaque", "pool"]
