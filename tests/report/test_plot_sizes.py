"""Pictures that work at any size: the feature-importance chart is capped (784 inputs drew
27,590 px wide), image-shaped inputs become a heat map per channel, filter grids carry a colour
scale with each filter normalised by its own largest |w|."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import weightio
from weightio.report import plots

pytest.importorskip("matplotlib")


def _size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def _mlp(shape: tuple[int, ...]):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    features = int(np.prod(shape))
    layers = ([torch.nn.Flatten()] if len(shape) > 1 else []) + [torch.nn.Linear(features, 8)]
    module = torch.nn.Sequential(*layers)
    return weightio.read(module, example_input=torch.zeros(1, *shape))


def test_image_input_importance_is_a_heat_map_not_a_27000_px_bar_chart():
    archive = _mlp((1, 28, 28))
    png = plots.feature_importance(archive)
    width, height = _size(png)
    assert width <= 100 * plots.MAX_CHART_WIDTH and height < 400
    three = plots.feature_importance(_mlp((3, 8, 8)))
    assert _size(three)[0] <= 100 * plots.MAX_CHART_WIDTH


def test_many_plain_features_show_the_largest_only():
    archive = _mlp((300,))
    png = plots.feature_importance(archive)
    assert _size(png)[0] <= 100 * plots.MAX_CHART_WIDTH


def test_filter_grid_normalises_each_filter_and_has_a_colour_bar():
    rng = np.random.default_rng(0)
    scales = np.geomspace(1e-4, 1.0, 16)[:, None, None, None]  # deep-layer filters of 4 decades
    weights = (rng.normal(size=(16, 8, 3, 3)) * scales).astype(np.float32)
    png = plots.filter_grid(weights, "conv.weight")
    assert png is not None and _size(png)[0] > 0
    rgb = plots.filter_grid(rng.normal(size=(4, 3, 5, 5)).astype(np.float32), "stem.weight")
    assert rgb is not None
