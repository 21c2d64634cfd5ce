"""End to end: a trained Keras CNN becomes an idiomatic channels-first PyTorch model, and a
PyTorch CNN becomes a channels-last Keras model, through ``weightio.convert`` with verification.

Both CNNs hold a BatchNorm on a feature map with non-zero running statistics: it must become
the other framework's own channel BatchNorm (Keras ``axis=-1`` on the channels-last map,
``BatchNorm2d`` on the channels-first one), with no permute around it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
from weightio.layouts.transforms import to_channels_first, to_channels_last

pytestmark = [pytest.mark.keras, pytest.mark.torch]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits, channels-last, scaled to [0, 1]."""
    data = datasets.load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x, data.target.astype("int64")


@pytest.fixture(scope="module")
def keras_cnn(digits: tuple[np.ndarray, np.ndarray]) -> object:
    """Conv2D -> BatchNorm -> MaxPool -> Conv2D stride 2 'same' -> Flatten -> Dense softmax,
    trained briefly."""
    x, y = digits
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


def test_keras_cnn_on_digits_to_torch(keras_cnn: object, digits: tuple, tmp_path: Path) -> None:
    x, y = digits
    result = weightio.convert(keras_cnn, tmp_path / "cnn.pt2")
    assert result.verification is not None and result.verification.passed
    archive = result.archive
    assert archive.spec.inputs[0].layout == "channels_last"
    assert archive.spec.inputs[0].shape == (1, 8, 8)
    flatten = next(l for l in archive.spec.layers if l.kind == "flatten")
    assert flatten.order == "channels_last"  # the order Keras flattened in, as recorded
    bn = next(l for l in archive.spec.layers if l.kind == "batch_norm")
    assert bn.axis == 1 and bn.input_rank == 4  # Keras axis=-1 on N,H,W,C is canonical axis 1
    keras_bn = next(l for l in keras_cnn.layers if isinstance(l, keras.layers.BatchNormalization))
    moving_mean, moving_var = (np.asarray(v) for v in (keras_bn.moving_mean, keras_bn.moving_variance))
    assert np.abs(moving_mean).min() > 0 and np.abs(moving_var - 1).min() > 0  # trained statistics

    module = weightio.to_torch(archive)
    kinds = [type(m).__name__ for m in module]
    # Idiomatic: no permute anywhere, the Linear's rows were permuted once instead.
    assert "Permute" not in kinds and "Flatten" in kinds, kinds
    assert kinds.count("BatchNorm2d") == 1, kinds
    torch_bn = next(m for m in module if isinstance(m, torch.nn.BatchNorm2d))
    assert np.array_equal(torch_bn.running_mean.numpy(), moving_mean)
    assert torch_bn.eps == keras_bn.epsilon
    assert kinds.count("ZeroPad2d") == 1  # the stride-2 'same' conv's asymmetric padding

    x_cf = to_channels_first(x)  # the digits, channels-first: N, 1, 8, 8
    with torch.no_grad():
        got = module.eval()(torch.from_numpy(x_cf)).numpy()
    reference = np.asarray(keras_cnn(x, training=False))  # type: ignore[operator]
    assert_close(reference, got)
    assert_close(reference, weightio.run(archive, x_cf))
    accuracy = float((got.argmax(1) == y).mean())
    assert accuracy == float((reference.argmax(1) == y).mean())

    # ...and the saved torch.export program computes the same.
    program = torch.export.load(str(tmp_path / "cnn.pt2"))
    with torch.no_grad():
        exported = program.module()(torch.from_numpy(x_cf[:16])).numpy()
    assert_close(reference[:16], exported)

    # ...and back to Keras: the same channels-last BatchNormalization(axis=-1), no permute.
    back = weightio.to_keras(archive)
    assert not any(isinstance(l, keras.layers.Permute) for l in back.layers)
    back_bn = [l for l in back.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(back_bn) == 1 and back_bn[0].axis in (-1, 3)
    assert_close(reference, np.asarray(back(x, training=False)))


class TorchCNN(torch.nn.Module):
    """Conv -> BatchNorm2d -> ReLU -> AvgPool -> Conv -> ReLU -> Flatten -> Linear, by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.pool = torch.nn.AvgPool2d(2)
        self.conv2 = torch.nn.Conv2d(6, 8, 3)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):  # noqa: ANN001, ANN201
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.fc(self.flatten(x))


def test_torch_cnn_with_avgpool_to_keras(digits: tuple, tmp_path: Path) -> None:
    x, y = digits
    x_cf = to_channels_first(x)
    torch.manual_seed(0)
    module = TorchCNN()
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(30):  # a few quick full-batch steps: non-trivial weights
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x_cf)), torch.from_numpy(y))
        loss.backward()
        optimiser.step()
    module.eval()

    result = weightio.convert(module, tmp_path / "cnn.keras", example_input=torch.from_numpy(x_cf[:2]))
    assert result.verification is not None and result.verification.passed
    archive = result.archive
    assert archive.spec.inputs[0].layout == "channels_first"

    assert np.abs(module.bn.running_mean.numpy()).min() > 0  # trained statistics
    bn = next(l for l in archive.spec.layers if l.kind == "batch_norm")
    assert bn.axis == 1 and bn.input_rank == 4

    model = keras.saving.load_model(tmp_path / "cnn.keras")
    assert tuple(model.input_shape) == (None, 8, 8, 1)  # channels-last Keras input
    assert not any(type(l).__name__ == "Permute" for l in model.layers)
    keras_bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(keras_bn) == 1 and keras_bn[0].axis in (-1, 3)  # on the channels-last map
    assert keras_bn[0].epsilon == module.bn.eps
    with torch.no_grad():
        reference = module(torch.from_numpy(x_cf)).numpy()
    got = np.asarray(model(x, training=False))  # fed channels-last digits
    assert_close(reference, got)
    assert_close(reference, weightio.run(archive, x_cf))


def test_permuted_dense_rows_are_exact(keras_cnn: object) -> None:
    """The folded Linear holds exactly the Keras kernel's values, only reordered."""
    archive = weightio.read(keras_cnn)
    module = weightio.to_torch(archive)
    dense = archive.spec.layers[-1]
    canonical = np.asarray(archive.tensors[dense.weight.key])
    linear = [m for m in module if isinstance(m, torch.nn.Linear)][0]
    folded = linear.weight.detach().numpy()
    assert not np.array_equal(folded, canonical)
    assert np.array_equal(np.sort(folded, axis=1), np.sort(canonical, axis=1))


def test_keras_conv_output_verifies_in_each_layout(tmp_path: Path) -> None:
    """A feature-map output: each side is fed and read back in its own layout."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6, 5, 2)), keras.layers.Conv2D(3, 2, padding="same")])
    result = weightio.convert(model, tmp_path / "fmap.pt")
    assert result.verification is not None and result.verification.passed
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 2)).astype("float32")
    reference = to_channels_first(np.asarray(model(x)))
    module = weightio.to_torch(result.archive)
    with torch.no_grad():
        assert_close(reference, module(torch.from_numpy(to_channels_first(x))).numpy())
    back = weightio.to_keras(result.archive)
    assert_close(reference, to_channels_first(np.asarray(back(to_channels_last(to_channels_first(x))))))


def test_load_into_existing_models_transposes_and_folds(keras_cnn: object) -> None:
    """load_into: conv kernels go in each framework's layout, the flatten order is folded."""
    archive = weightio.read(keras_cnn)
    x, _ = datasets.load_digits(return_X_y=True)
    x = (x[:32].reshape(-1, 8, 8, 1) / 16.0).astype("float32")
    reference = np.asarray(keras_cnn(x, training=False))  # type: ignore[operator]

    fresh = keras.models.clone_model(keras_cnn)  # same architecture, fresh random weights
    assert not np.allclose(np.asarray(fresh(x)), reference)
    weightio.load_into(archive, fresh)
    assert_close(reference, np.asarray(fresh(x, training=False)))

    module = weightio.to_torch(archive)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    weightio.load_into(archive, module)
    with torch.no_grad():
        assert_close(reference, module(torch.from_numpy(to_channels_first(x))).numpy())


def test_resnet_stem_pooling_through_a_keras_file(tmp_path: Path) -> None:
    """resnet's stem, conv -> BN -> ReLU -> MaxPool2d(3, 2, padding=1): the -inf padding is a
    built-in Pad operation (``-Infinity`` in config.json), so the verified ``.keras`` loads with
    ``safe_mode=True``, and weightio's own reader takes the file back to PyTorch."""
    torch.manual_seed(0)
    nn = torch.nn
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(3, 2, padding=1), nn.Conv2d(4, 2, 1)).eval()
    with torch.no_grad():
        stem[1].running_mean.uniform_(-0.5, 0.5)
        stem[1].running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        reference = stem(torch.from_numpy(x)).numpy()
    weightio.convert(stem, tmp_path / "stem.keras", example_input=torch.from_numpy(x))
    loaded = keras.saving.load_model(tmp_path / "stem.keras", safe_mode=True)
    assert "Pad" in [type(layer).__name__ for layer in loaded.operations]
    assert_close(reference, to_channels_first(np.asarray(loaded(to_channels_last(x)))))
    back = weightio.to_torch(weightio.read(tmp_path / "stem.keras"))
    with torch.no_grad():
        assert_close(reference, back(torch.from_numpy(x)).numpy())
