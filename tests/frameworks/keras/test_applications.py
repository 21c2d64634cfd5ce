"""keras.applications models with Keras 3 operation layers convert and match (issue 14).

MobileNetV3Small writes hard-swish as ``x * relu6(x + 3) / 6`` with ``keras.ops`` calls and
starts with its own preprocessing (``Rescaling``); EfficientNetB0 has ``Rescaling``,
``Normalization`` on the image and squeeze-excite blocks. Built with random weights, then every
batch-norm statistic, beta and bias perturbed (a swapped parameter cannot hide behind zeros
and ones), each goes to PyTorch and back to Keras, and every witness matches Keras to 1e-5 of
the output's scale (float32): the numpy runtime, the PyTorch module, the Keras model written
back, and the Keras model written from the PyTorch module read again.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close, keras_view  # noqa: E402

import weightio  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

SIZE = 32


def perturb(model: object, seed: int) -> None:
    """Random batch-norm statistics and betas, random biases and Normalization statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # type: ignore[attr-defined]
        for variable in layer.weights:
            leaf = variable.path.rsplit("/", 1)[-1]
            shape = tuple(variable.shape)
            if leaf in ("moving_variance", "variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif leaf in ("moving_mean", "mean", "beta", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            elif leaf == "gamma":
                value = rng.uniform(0.7, 1.3, shape)
            else:
                continue
            variable.assign(value.astype(variable.dtype))


def _mobilenet_v3_small() -> object:
    return keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), weights=None, include_preprocessing=True, classes=10
    )


def _efficientnet_b0() -> object:
    return keras.applications.EfficientNetB0(input_shape=(SIZE, SIZE, 3), weights=None, classes=10)


APPLICATIONS = {"MobileNetV3Small": _mobilenet_v3_small, "EfficientNetB0": _efficientnet_b0}
#: Run only with ``--runslow`` / ``WEIGHTIO_RUNSLOW=1``; MobileNetV3Small stays in every run.
SLOW = {"EfficientNetB0"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(APPLICATIONS)]
)
def test_application_matches_in_numpy_torch_and_back(name: str) -> None:
    keras.utils.set_random_seed(11)
    model = APPLICATIONS[name]()
    perturb(model, 3)
    images = np.random.default_rng(5).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    reference = np.asarray(model(images, training=False))
    started = time.perf_counter()
    archive = weightio.read(model)
    opaque = [(layer.name, layer.reason) for layer in archive.spec.layers if layer.kind == "opaque"]
    assert not opaque
    numpy_out = keras_view(archive.spec, lambda xs: weightio.run(archive, xs[0]))([images])[0]
    module = weightio.to_torch(archive)

    def torch_run(xs: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(xs[0])).numpy()

    torch_out = keras_view(archive.spec, torch_run)([images])[0]
    back = weightio.to_keras(archive)
    back_out = np.asarray(back(images, training=False))
    worst = {
        label: float(np.max(np.abs(out - reference)) / max(1.0, float(np.max(np.abs(reference)))))
        for label, out in [("numpy", numpy_out), ("torch", torch_out), ("keras back", back_out)]
    }
    print(f"{name}: relative max diff {worst} ({time.perf_counter() - started:.1f} s)")
    for out in (numpy_out, torch_out, back_out):
        assert_close(reference, out)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(APPLICATIONS)]
)
def test_application_back_from_torch(name: str) -> None:
    """Keras -> PyTorch, then the PyTorch module read again -> Keras: still the same numbers."""
    keras.utils.set_random_seed(11)
    model = APPLICATIONS[name]()
    perturb(model, 3)
    images = np.random.default_rng(5).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    reference = np.asarray(model(images, training=False))
    module = weightio.to_torch(weightio.read(model))
    again = weightio.read(module, example_input=torch.zeros(1, 3, SIZE, SIZE))
    assert_close(reference, np.asarray(weightio.to_keras(again)(images, training=False)))
