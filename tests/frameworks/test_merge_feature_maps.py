"""Residual conv blocks: elementwise merges of feature maps, both directions, three witnesses.

A merge of feature maps is elementwise, so it computes the same numbers on Keras's
channels-last tensors as on the canonical channels-first ones: it must convert without any
permute, with the BatchNorm inside the block on the channel axis of each side.
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

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
from weightio.layouts.transforms import to_channels_first

pytestmark = [pytest.mark.keras, pytest.mark.torch]

MERGES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"]


def _randomise_bn(model: object, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # type: ignore[attr-defined]
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(size=beta.shape).astype("float32"),
                rng.normal(size=mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])


def keras_residual(merge: str) -> object:
    """x -> Conv2D -> BN -> ReLU -> Conv2D -> merge(x, ·) -> ReLU -> GlobalAvgPool -> Dense."""
    keras.utils.set_random_seed(7)
    L = keras.layers
    x = keras.Input((6, 5, 4))
    y = L.Conv2D(4, 3, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.Conv2D(4, 3, padding="same")(y)
    y = getattr(L, merge)()([x, y])
    y = L.ReLU()(y)
    out = L.Dense(3)(L.GlobalAveragePooling2D()(y))
    model = keras.Model(x, out)
    _randomise_bn(model, 1)
    return model


@pytest.mark.parametrize("merge", MERGES)
def test_keras_residual_block_to_torch(merge: str, tmp_path: Path) -> None:
    model = keras_residual(merge)
    result = weightio.convert(model, tmp_path / "res.pt")
    assert result.verification is not None and result.verification.passed
    kinds = [layer.kind for layer in result.archive.spec.layers]
    assert "opaque" not in kinds and merge.lower() in kinds, kinds
    x = np.random.default_rng(0).standard_normal((3, 6, 5, 4)).astype("float32")
    reference = np.asarray(model(x, training=False))  # type: ignore[operator]
    x_cf = to_channels_first(x)
    assert_close(reference, weightio.run(result.archive, x_cf))
    module = weightio.to_torch(result.archive)
    assert not any(type(m).__name__ == "Permute" for m in module.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    with torch.no_grad():
        assert_close(reference, module.eval()(torch.from_numpy(x_cf)).numpy())
    # ...and back to Keras: the merge on channels-last maps again, no permute.
    back = weightio.to_keras(result.archive)
    assert not any(isinstance(l, keras.layers.Permute) for l in back.layers)
    assert_close(reference, np.asarray(back(x, training=False)))


class TorchResidual(torch.nn.Module):
    """``relu(x + bn(conv(relu(conv(x)))))`` then a 1×1 conv: the classic residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = self.bn(self.conv2(torch.relu(self.conv1(x))))
        return self.head(torch.relu(x + y))


def test_torch_residual_block_to_keras(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TorchResidual()
    with torch.no_grad():
        module.bn.running_mean.normal_()
        module.bn.running_var.uniform_(0.5, 2.0)
        module.bn.weight.uniform_(0.5, 1.5)
        module.bn.bias.normal_()
    module.eval()
    x_cf = torch.randn(3, 4, 6, 5)
    result = weightio.convert(module, tmp_path / "res.keras", example_input=x_cf[:1])
    assert result.verification is not None and result.verification.passed
    kinds = [layer.kind for layer in result.archive.spec.layers]
    assert "add" in kinds and "batch_norm" in kinds, kinds

    model = keras.saving.load_model(tmp_path / "res.keras")
    classes = [type(l).__name__ for l in model.layers]
    assert "Add" in classes and "Permute" not in classes, classes
    bn = next(l for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    assert bn.axis in (-1, 3)
    with torch.no_grad():
        reference = module(x_cf).numpy()
    x_cl = np.moveaxis(x_cf.numpy(), 1, -1)
    got = to_channels_first(np.asarray(model(x_cl, training=False)))  # a feature-map output
    assert_close(reference, got)
    assert_close(reference, weightio.run(result.archive, x_cf.numpy()))


class TorchBranches(torch.nn.Module):
    """Two conv branches joined with ``torch.cat(dim=1)`` (channels), then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 2, 1)
        self.b = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(6, 2, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.head(torch.relu(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_torch_channel_concatenate_to_keras_axis_minus_one(tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = TorchBranches().eval()
    x_cf = torch.randn(2, 3, 5, 6)
    result = weightio.convert(module, tmp_path / "cat.keras", example_input=x_cf[:1])
    assert result.verification is not None and result.verification.passed
    model = keras.saving.load_model(tmp_path / "cat.keras")
    concat = next(l for l in model.layers if isinstance(l, keras.layers.Concatenate))
    assert concat.axis in (-1, 3)
    assert not any(isinstance(l, keras.layers.Permute) for l in model.layers)
    with torch.no_grad():
        reference = module(x_cf).numpy()
    got = to_channels_first(np.asarray(model(np.moveaxis(x_cf.numpy(), 1, -1))))
    assert_close(reference, got)
    assert_close(reference, weightio.run(result.archive, x_cf.numpy()))


def test_keras_merge_of_a_map_and_plain_data_is_joined_plain() -> None:
    """A merge mixing a feature map with a plain tensor of the same Keras shape: Keras holds both
    alike, so the reader moves the map to the plain form with one exact permute and merges plain;
    Keras, the numpy runtime, torch and the Keras model written back agree.
    """
    keras.utils.set_random_seed(2)
    L = keras.layers
    x = keras.Input((4, 4, 2))
    conv = L.Conv2D(2, 1, bias_initializer="random_normal")(x)
    plain = L.Dense(2, bias_initializer="random_normal")(x)  # last axis of x: plain, same shape
    add = L.Add()
    model = keras.Model(x, add([conv, plain]))
    archive = weightio.read(model)
    merged = archive.spec.layer(add.name)
    assert merged.kind == "add"
    assert [archive.spec.layer(s).kind for s in merged.inputs] == ["permute", "dense"]
    data = np.random.default_rng(3).standard_normal((2, 4, 4, 2)).astype("float32")
    reference = np.asarray(model(data))
    x_cf = to_channels_first(data)
    assert_close(reference, weightio.run(archive, x_cf))
    with torch.no_grad():
        assert_close(reference, weightio.to_torch(archive)(torch.from_numpy(x_cf)).numpy())
    assert_close(reference, np.asarray(weightio.to_keras(archive)(data)))


def test_group_norm_on_feature_maps_both_ways(tmp_path: Path) -> None:
    """GroupNormalization(axis=-1) on a Keras map is canonical axis 1: torch GroupNorm, and back."""
    keras.utils.set_random_seed(4)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((5, 4, 3)), L.Conv2D(6, 3, padding="same"),
        L.GroupNormalization(groups=3, beta_initializer="random_normal", gamma_initializer="random_uniform"),
        L.Conv2D(2, 1),
    ])
    result = weightio.convert(model, tmp_path / "gn.pt")
    assert result.verification is not None and result.verification.passed
    gn = next(l for l in result.archive.spec.layers if l.kind == "group_norm")
    assert gn.axis == 1
    x = np.random.default_rng(1).standard_normal((2, 5, 4, 3)).astype("float32")
    reference = to_channels_first(np.asarray(model(x)))
    module = weightio.to_torch(result.archive)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in module.modules())
    with torch.no_grad():
        assert_close(reference, module(torch.from_numpy(to_channels_first(x))).numpy())
    assert_close(reference, weightio.run(result.archive, to_channels_first(x)))
    back = weightio.to_keras(result.archive)
    assert not any(isinstance(l, keras.layers.Permute) for l in back.layers)
    assert_close(reference, to_channels_first(np.asarray(back(x))))
