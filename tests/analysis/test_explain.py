"""explain/inspect describe the conv, pool, norm, merge and recurrent kinds in their own words."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weightio  # noqa: E402
from weightio.analysis.explain import formula
from weightio.analysis.inspect import inspect_archive
from weightio.spec.base import LayerBase
from weightio.spec.layers import LAYER_KINDS

pytestmark = [pytest.mark.torch]


ISSUE_4_KINDS = {
    "conv", "separable_conv", "conv_transpose", "pool", "global_pool", "zero_padding",
    "upsampling", "flatten", "reshape", "permute", "batch_norm", "layer_norm", "group_norm",
    "normalization", "embedding", "lstm", "gru", "simple_rnn", "add", "subtract", "multiply",
    "average", "maximum", "minimum", "concatenate", "last_step", "multi_head_attention",
}


def test_every_kind_states_its_own_formula() -> None:
    assert ISSUE_4_KINDS <= set(LAYER_KINDS)
    for kind, cls in LAYER_KINDS.items():
        assert cls.formula is not LayerBase.formula, f"{kind} has no formula of its own"


def test_cnn_explained_and_inspected() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 2),
    ).eval()
    archive = weightio.read(net, example_input=torch.zeros(1, 1, 4, 4))
    by_kind = {layer.kind: layer for layer in archive.spec.layers}
    assert formula(by_kind["conv"]) == "conv2d(x, W) + b"
    assert formula(by_kind["batch_norm"]).startswith("(x - running_mean) / sqrt(running_var + 1e-05)")
    assert "axis 1" in formula(by_kind["batch_norm"])
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4)).astype("float32")
    explanation = weightio.explain(archive, x)
    assert [s.formula for s in explanation.steps][:2] == [formula(by_kind["conv"]), formula(by_kind["batch_norm"])]
    np.testing.assert_array_equal(explanation.output_arrays()[0], weightio.run(archive, x))
    details = {layer.kind: layer.detail for layer in inspect_archive(archive).layers}
    assert details["conv"] == "1->3, kernel (3, 3), stride (1, 1), padding [(1, 1), (1, 1)]"
    assert details["batch_norm"] == "features=3, axis=1, eps=1e-05"
    assert details["pool"].startswith("max, size (2, 2)")
