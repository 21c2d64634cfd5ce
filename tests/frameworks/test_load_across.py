"""``load_into`` across frameworks: a PyTorch state dict into a Keras model and a Keras model's
weights into an ``nn.Module``, of the same architecture.

A bare state dict has no layer kinds: its tensors go into the Keras model's by canonical
position (``frameworks.pairing.pair_by_position``), conv kernels transposed and the dense
rows after ``nn.Flatten`` (channels-first order) permuted for Keras' channels-last Flatten.
Batch-norm statistics are perturbed, so a swapped or dropped one shows in the outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from weightio.errors import StructureMismatchError
from weightio.layouts.transforms import to_channels_last

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
nn = torch.nn


def _torch_cnn(classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, classes)
    ).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 1.5)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _keras_cnn(classes: int = 5) -> object:
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv2d"),
        keras.layers.BatchNormalization(epsilon=1e-5, name="batch_normalization"),  # torch's eps
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(classes, name="dense"),
    ])


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((6, 3, 8, 8)).astype("float32")


def _torch_out(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _close(expected: np.ndarray, got: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    assert np.abs(expected - got).max() <= 1e-5 * max(scale, 1.0)


def test_state_dict_into_keras_by_position(x, tmp_path) -> None:
    source = _torch_cnn()
    reference = _torch_out(source, x)
    target = _keras_cnn()
    assert not np.allclose(np.asarray(target(to_channels_last(x))), reference, atol=1e-3)
    report = weightio.load_into(source.state_dict(), target)
    assert report.complete, report.summary()
    assert report.loaded == [
        "conv2d/weight", "conv2d/bias", "batch_normalization/weight", "batch_normalization/bias",
        "batch_normalization/running_mean", "batch_normalization/running_var",
        "dense/weight", "dense/bias",
    ]
    _close(reference, np.asarray(target(to_channels_last(x), training=False)))

    torch.save(source.state_dict(), tmp_path / "cnn.pt")  # the same from the file a user has
    again = _keras_cnn()
    weightio.load_into(tmp_path / "cnn.pt", again)
    _close(reference, np.asarray(again(to_channels_last(x), training=False)))


def test_keras_weights_into_torch(x) -> None:
    source = _keras_cnn()
    bn = source.layers[1]
    rng = np.random.default_rng(4)
    bn.set_weights([rng.uniform(0.5, 1.5, 4).astype("float32"), rng.uniform(-0.5, 0.5, 4).astype("float32"),
                    rng.uniform(-0.5, 0.5, 4).astype("float32"), rng.uniform(0.5, 1.5, 4).astype("float32")])
    reference = np.asarray(source(to_channels_last(x), training=False))
    target = _torch_cnn(seed=9)
    assert not np.allclose(_torch_out(target, x), reference, atol=1e-3)
    report = weightio.load_into(source, target)
    assert report.complete, report.summary()
    assert "4.weight" in report.loaded and "1.running_var" in report.loaded
    _close(reference, _torch_out(target, x))


def test_shape_mismatch_names_both_tensors(x) -> None:
    target = _keras_cnn(classes=5)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(StructureMismatchError) as caught:
        weightio.load_into(_torch_cnn(classes=7).state_dict(), target)
    message = str(caught.value)
    assert "'4.weight' [7, 144]" in message and "Keras model dense/weight [5, 144]" in message
    assert "'4.bias' [7]" in message and "dense/bias" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))  # untouched

    with pytest.raises(StructureMismatchError) as caught:  # the reverse: a Keras model, 5 classes
        weightio.load_into(target, _torch_cnn(classes=7))
    message = str(caught.value)
    assert "[5, 144] in the archive, [7, 144] in the target" in message
    assert "'dense.weight' and '4.weight'" in message


def test_partial_state_dict_reports_what_kept_its_values(x) -> None:
    """strict=False: a new head of another size keeps its own values, and the report says so."""
    target = _keras_cnn(classes=5)
    head = [w.copy() for w in target.layers[-1].get_weights()]
    report = weightio.load_into(_torch_cnn(classes=7).state_dict(), target, strict=False)
    assert report.missing == ["dense/weight", "dense/bias"]
    assert [entry.split(":")[0] for entry in report.skipped] == ["tensor '4.weight'", "tensor '4.bias'"]
    assert "dense/weight" not in report.loaded and "conv2d/weight" in report.loaded
    assert all(np.array_equal(a, b) for a, b in zip(head, target.layers[-1].get_weights()))
