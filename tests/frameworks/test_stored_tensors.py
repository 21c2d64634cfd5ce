"""A parameter used directly in forward: convnext's layer scale (``self.gamma * x``), a stored
offset (``x + self.pos``) and ``F.layer_norm`` with the module's own weight and bias. Each reads
under its state-dict key and computes the same numbers in torch, the numpy runtime and Keras.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402
from weightio.layouts.flow import tensor_layouts  # noqa: E402
from weightio.layouts.transforms import to_channels_last  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]
nn = torch.nn


class _Scaled(nn.Module):
    """conv -> permute -> F.layer_norm(own weight, bias) -> permute -> gamma * x + pos -> + x."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm_weight = nn.Parameter(torch.rand(4) + 0.5)
        self.norm_bias = nn.Parameter(torch.randn(4))
        self.gamma = nn.Parameter(torch.randn(4, 1, 1))
        self.pos = nn.Parameter(torch.randn(4, 5, 5))

    def forward(self, x):  # noqa: ANN001, ANN201
        c = self.conv(x)
        y = c.permute(0, 2, 3, 1)
        y = torch.nn.functional.layer_norm(y, (4,), self.norm_weight, self.norm_bias, 1e-6)
        y = self.gamma * y.permute(0, 3, 1, 2)
        return (y + self.pos) + c


def test_stored_tensors_read_by_key_and_match() -> None:
    torch.manual_seed(0)
    model = _Scaled().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype("float32")
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    archive = weightio.read(model, example_input=torch.from_numpy(x))
    by_kind = {layer.kind: layer for layer in archive.spec.layers}
    assert by_kind["layer_norm"].weight.key == "norm_weight"
    scale = [l for l in archive.spec.layers if l.kind == "arithmetic"]
    assert [(l.op, l.constant_first, l.constant.key) for l in scale] == [
        ("multiply", True, "gamma"), ("add", False, "pos")
    ]
    assert all(l.learned for l in scale)
    assert_close(reference, weightio.run(archive, x))
    got = np.asarray(weightio.to_keras(archive)(to_channels_last(x)))
    # The sum of a feature map with the permuted (plain) branch is joined channels-first.
    assert tensor_layouts(archive.spec)[archive.spec.outputs[0].layer] == "plain"
    assert_close(reference, got)


def test_two_stored_tensors_are_refused_by_name() -> None:
    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.ones(3))
            self.b = nn.Parameter(torch.ones(3))

        def forward(self, x):  # noqa: ANN001, ANN201
            return x + self.a * self.b

    with pytest.raises(UnsupportedLayerError) as info:
        weightio.read(Both(), example_input=torch.zeros(2, 3))
    assert info.value.layer == "mul"
