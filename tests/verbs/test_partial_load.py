"""Transfer learning: a ResNet-style backbone loaded into a model with a new head.

``load_into(..., strict=False)`` copies what fits and reports the rest: the old head skipped
(with the shapes that differ), the new head missing (it keeps its own initialisation). The
backbone then computes exactly what the source's backbone computes. ``rename=`` pairs by
state-dict key with prefixes mapped.
"""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from weightio.errors import StructureMismatchError, UnsupportedSourceError

torch = pytest.importorskip("torch")
nn = torch.nn


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class Net(nn.Module):
    """conv stem, two residual blocks, global pooling, a linear head of ``classes``."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = Block(8)
        self.layer2 = Block(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, classes)

    def features(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        return self.flatten(self.pool(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.features(x))


def _trained(classes: int, seed: int) -> Net:
    torch.manual_seed(seed)
    net = Net(classes).eval()
    with torch.no_grad():  # batch-norm statistics and affine away from their init
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net


def test_backbone_into_a_new_head(tmp_path):
    source = _trained(100, 0)
    archive = weightio.read(source, example_input=torch.zeros(1, 3, 12, 12))
    target = _trained(10, 1)
    fresh_head = target.fc.weight.detach().clone()
    with pytest.raises(StructureMismatchError, match="fc"):
        weightio.load_into(archive, target)  # strict: refused, nothing copied
    assert not torch.equal(target.stem.weight, source.stem.weight)
    report = weightio.load_into(archive, target, strict=False)
    assert report.model is target and not report.complete
    assert len(report.skipped) == 1 and "'fc'" in report.skipped[0]
    assert "[100, 8] in the archive, [10, 8] in the target" in report.skipped[0]
    assert report.missing == ["fc.weight", "fc.bias"]
    assert "stem.weight" in report.loaded and "layer2.bn2.running_var" in report.loaded
    assert "skipped: layer 'fc'" in str(report)
    assert torch.equal(target.fc.weight, fresh_head)  # the new head keeps its own values
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        np.testing.assert_array_equal(target.features(x).numpy(), source.features(x).numpy())


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _trained(100, 2)
        self.extra = nn.Linear(100, 3)


def test_rename_pairs_prefixed_keys(tmp_path):
    wrapped = Wrapped()
    archive = weightio.read(wrapped.state_dict())  # weights only: pairs by key
    target = _trained(100, 3)
    report = weightio.load_into(archive, target, rename={"backbone.": ""}, strict=False)
    assert report.missing == []
    assert sorted(report.skipped) == [
        "tensor 'extra.bias': the target has no such tensor",
        "tensor 'extra.weight': the target has no such tensor",
    ]
    for key, value in target.state_dict().items():
        assert torch.equal(value, wrapped.backbone.state_dict()[key]), key
    with pytest.raises(StructureMismatchError, match="extra.weight"):
        weightio.load_into(archive, _trained(100, 4), rename={"backbone.": ""})
    dropped = weightio.load_into(
        archive, _trained(100, 4),
        rename=lambda key: key.removeprefix("backbone.") if key.startswith("backbone.") else None,
    )
    assert dropped.complete is False and all("dropped by rename" in s for s in dropped.skipped)
    assert dropped.missing == []


def test_keras_backbone_into_a_new_head():
    keras = pytest.importorskip("keras")

    def model(classes: int, seed: int):
        keras.utils.set_random_seed(seed)
        net = keras.Sequential([
            keras.Input((10, 10, 3)), keras.layers.Conv2D(6, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(classes, name="head"),
        ])
        for weight in net.weights:
            if "variance" in weight.path:
                weight.assign(np.random.default_rng(seed).uniform(0.5, 2, weight.shape))
            else:
                weight.assign(np.random.default_rng(seed).normal(size=weight.shape))
        return net

    source, target = model(100, 0), model(10, 1)
    report = weightio.load_into(weightio.read(source), target, strict=False)
    assert len(report.skipped) == 1 and "'head'" in report.skipped[0]
    assert report.missing == ["layer 'head' (weight, bias)"]
    features = keras.Model(source.inputs, source.layers[-2].output)
    features_t = keras.Model(target.inputs, target.layers[-2].output)
    x = np.random.default_rng(5).normal(size=(2, 10, 10, 3)).astype("float32")
    np.testing.assert_array_equal(features_t.predict(x, verbose=0), features.predict(x, verbose=0))
    with pytest.raises(UnsupportedSourceError, match="rename="):
        weightio.load_into(weightio.read(source), target, rename={"a": "b"})
