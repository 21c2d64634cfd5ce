"""``run`` and ``explain`` take input in the source framework's layout: a Keras CNN's
channels-last ``.npy`` goes in as it is and matches Keras ``predict``; ``--layout canonical``
takes channels-first; a wrong shape is refused naming the layout it expected.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import weightio
from weightio.errors import InvalidInputError

keras = pytest.importorskip("keras")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def cnns(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layout")
    keras.utils.set_random_seed(0)
    head = keras.Sequential([
        keras.Input((9, 7, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2),
    ])
    maps = keras.Sequential([keras.Input((9, 7, 3)), keras.layers.Conv2D(5, 3, padding="same")])
    for model in (head, maps):  # non-trivial biases
        for weight in model.weights:
            weight.assign(np.random.default_rng(1).normal(size=weight.shape).astype("float32"))
    head.save(folder / "head.keras")
    maps.save(folder / "maps.keras")
    x = np.random.default_rng(2).normal(size=(3, 9, 7, 3)).astype("float32")
    np.save(folder / "x_nhwc.npy", x)
    np.save(folder / "x_nchw.npy", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return folder, {"head": head, "maps": maps}, x


@pytest.mark.parametrize("name", ["head", "maps"])
def test_run_takes_and_returns_keras_layout(cnns, name):
    folder, models, x = cnns
    expected = models[name].predict(x, verbose=0)
    archive = weightio.read(folder / f"{name}.keras")
    np.testing.assert_allclose(weightio.run(archive, x, layout="source"), expected,
                               rtol=1e-5, atol=1e-5)
    canonical = weightio.run(archive, x.transpose(0, 3, 1, 2))
    if name == "maps":  # a feature-map output comes back channels-first in the canonical layout
        canonical = canonical.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(canonical, expected, rtol=1e-5, atol=1e-5)


def test_cli_run_on_channels_last_npy_matches_predict(cnns, tmp_path):
    folder, models, x = cnns
    for name in ("head", "maps"):
        out = tmp_path / f"{name}.npy"
        done = _cli("run", str(folder / f"{name}.keras"), "--input", str(folder / "x_nhwc.npy"),
                    "--output", str(out))
        assert done.returncode == 0, done.stderr
        np.testing.assert_allclose(np.load(out), models[name].predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-5)
    canonical = _cli("run", str(folder / "head.keras"), "--input", str(folder / "x_nchw.npy"),
                     "--layout", "canonical", "--output", str(tmp_path / "c.npy"))
    assert canonical.returncode == 0, canonical.stderr
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), models["head"].predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_wrong_layout_is_refused_naming_the_expected_one(cnns):
    folder, _, x = cnns
    archive = weightio.read(folder / "head.keras")
    with pytest.raises(InvalidInputError, match=r"\(batch, 9, 7, 3\) in the channels_last layout"):
        weightio.run(archive, x.transpose(0, 3, 1, 2), layout="source")
    done = _cli("run", str(folder / "head.keras"), "--input", str(folder / "x_nchw.npy"))
    assert done.returncode == 2 and "--layout canonical" in done.stderr
    bad = _cli("run", str(folder / "head.keras"), "--input", str(folder / "x_nhwc.npy"),
               "--layout", "sideways")
    assert bad.returncode == 2 and "layout must be one of" in bad.stderr


def test_explain_takes_the_source_layout(cnns):
    folder, models, x = cnns
    archive = weightio.read(folder / "head.keras")
    explanation = weightio.explain(archive, x[0], layout="source")
    np.testing.assert_allclose(explanation.output_arrays()[0],
                               models["head"].predict(x[:1], verbose=0), rtol=1e-5, atol=1e-5)


def test_torch_sources_are_canonical_already(cnns):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(140, 2))
    archive = weightio.read(module, example_input=torch.zeros(1, 3, 9, 7))
    x = np.random.default_rng(3).normal(size=(2, 3, 9, 7)).astype("float32")
    np.testing.assert_array_equal(weightio.run(archive, x, layout="source"), weightio.run(archive, x))
