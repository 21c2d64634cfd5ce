"""keras.applications models with Keras 3 operation layers convert and match (issue 14).

MobileNetV3Small writes hard-swish as ``x * relu6(x + 3) / 6`` with ``keras.ops`` calls and
starts with its own preprocessing (``Rescaling``); EfficientNetB0 has ``Rescaling``,
``Normalization`` on the image and squeeze-excite blocks; ConvNeXtTiny nests ``Sequential``
stem and downsampling blocks and has ``LayerScale``; MobileNetV2 is nested as a base model in
a ``Sequential`` with a new head (transfer learning). Built with random weights, then every
batch-norm statistic, beta and bias perturbed (a swapped parameter cannot hide behind zeros
and ones), each goes to PyTorch and back to Keras, and every witness matches Keras to 1e-5 of
the output's scale (float32): the numpy runtime, the PyTorch module, the Keras model written
back, and the Keras model written from the PyTorch module read again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

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


def perturb(model: object, seed: int, calibration: np.ndarray | None = None) -> None:
    """Random batch-norm statistics, betas and gammas, random biases, Normalization statistics
    and ConvNeXt's LayerScale factors (inside nested models too).

    With ``calibration`` (a batch other than the probes), the batch norms' moving statistics are
    then that batch's own (one training-mode call with momentum 0), floored and moved off by a little:
    random statistics that do not fit the activations shrink the signal through a deep stack of
    batch norms while the betas keep their size, so EfficientNetB0 and both MobileNets gave one
    output for any input (to 1e-6) and a swapped parameter could hide.
    """
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        for variable in layer.weights:
            leaf = variable.path.rsplit("/", 1)[-1]
            shape = tuple(variable.shape)
            if type(layer).__name__ == "LayerScale":
                value = rng.uniform(0.5, 1.5, shape)
            elif leaf in ("moving_variance", "variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif leaf in ("moving_mean", "mean", "beta", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            elif leaf == "gamma":
                value = rng.uniform(0.7, 1.3, shape)
            else:
                continue
            variable.assign(value.astype(variable.dtype))
        if isinstance(layer, keras.layers.Normalization):
            # it computes with a copy of its statistics, made from the variables at build: without
            # this, the live model ignored the values just set (while a saved and loaded model,
            # and weightio, use them) and, the output being constant, nothing showed
            layer.finalize_state()
    norms = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if calibration is None or not norms:
        return
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(calibration, training=True)  # type: ignore[operator]
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
        mean, variance = (np.asarray(v) for v in (layer.moving_mean, layer.moving_variance))
        variance = variance + FLOOR * variance.mean()  # as the torchvision zoo's, for float32 rounding
        layer.moving_mean.assign((mean + 0.1 * np.sqrt(variance) * rng.standard_normal(mean.shape)).astype("float32"))
        layer.moving_variance.assign((variance * rng.uniform(0.75, 1.25, variance.shape)).astype("float32"))


#: The least spread between the two probes' outputs, relative to the output's scale, for a
#: comparison to mean something: a thousand times the tolerance (``assert_close``'s 1e-5).
INPUT_EFFECT = 1000 * 1e-5
#: The least moving variance after calibration, as a fraction of its layer's mean (a channel the
#: batch hardly moves would amplify float32 rounding past the tolerance).
FLOOR = 0.3


def images(seed: int, count: int = 2) -> np.ndarray:
    """Probe (or calibration) images, pixel values 0-255 as the applications take them."""
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


def assert_input_matters(reference: np.ndarray) -> None:
    """The two probes' outputs differ by far more than the tolerance (relative to their scale)."""
    effect = float(np.max(np.abs(reference[0] - reference[1])))
    scale = max(1e-12, float(np.max(np.abs(reference))))
    assert effect / scale > INPUT_EFFECT, f"the two probes give (nearly) one output: {effect:.3g} of {scale:.3g}"


def _all_layers(model: object) -> list:
    """Every layer, a nested model's own layers in place of the model."""
    found = []
    for layer in model.layers:  # type: ignore[attr-defined]
        found.extend(_all_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def _mobilenet_v3_small() -> object:
    """Logits (no softmax): with batch-norm statistics that fit the data, the softmax saturates
    (one-hot outputs), where a wrong number would not show."""
    return keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), weights=None, include_preprocessing=True, classes=10,
        classifier_activation=None,
    )


def _efficientnet_b0() -> object:
    """Logits, as MobileNetV3Small."""
    return keras.applications.EfficientNetB0(
        input_shape=(SIZE, SIZE, 3), weights=None, classes=10, classifier_activation=None
    )


def _convnext_tiny() -> object:
    """Logits (no softmax), so a wrong number shows at the output's own scale."""
    return keras.applications.ConvNeXtTiny(
        input_shape=(SIZE, SIZE, 3), weights=None, classes=10, classifier_activation=None
    )


def _mobilenet_v2_transfer() -> object:
    """Transfer learning: a base model nested in a Sequential with a new head."""
    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35
    )
    model = keras.Sequential([base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dropout(0.2), keras.layers.Dense(5)])
    model.build((None, SIZE, SIZE, 3))
    return model


APPLICATIONS = {
    "MobileNetV3Small": _mobilenet_v3_small,
    "EfficientNetB0": _efficientnet_b0,
    "ConvNeXtTiny": _convnext_tiny,
    "MobileNetV2 in Sequential": _mobilenet_v2_transfer,
}
#: Run only with ``--runslow`` / ``WEIGHTIO_RUNSLOW=1``; MobileNetV3Small and the nested
#: MobileNetV2 (alpha 0.35) stay in every run.
SLOW = {"EfficientNetB0", "ConvNeXtTiny"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(APPLICATIONS)]
)
def test_application_matches_in_numpy_torch_and_back(name: str) -> None:
    keras.utils.set_random_seed(11)
    model = APPLICATIONS[name]()
    perturb(model, 3, images(6, 8))
    probes = images(5)
    reference = np.asarray(model(probes, training=False))
    assert_input_matters(reference)
    started = time.perf_counter()
    archive = weightio.read(model)
    opaque = [(layer.name, layer.reason) for layer in archive.spec.layers if layer.kind == "opaque"]
    assert not opaque
    numpy_out = keras_view(archive.spec, lambda xs: weightio.run(archive, xs[0]))([probes])[0]
    module = weightio.to_torch(archive)

    def torch_run(xs: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(xs[0])).numpy()

    torch_out = keras_view(archive.spec, torch_run)([probes])[0]
    back = weightio.to_keras(archive)
    back_out = np.asarray(back(probes, training=False))
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
    perturb(model, 3, images(6, 8))
    probes = images(5)
    reference = np.asarray(model(probes, training=False))
    assert_input_matters(reference)
    module = weightio.to_torch(weightio.read(model))
    again = weightio.read(module, example_input=torch.zeros(1, 3, SIZE, SIZE))
    back = np.asarray(weightio.to_keras(again)(probes, training=False))
    worst = float(np.max(np.abs(back - reference)) / max(1.0, float(np.max(np.abs(reference)))))
    print(f"{name}: PyTorch -> Keras relative max diff {worst}")
    assert_close(reference, back)


def _convnext_block() -> object:
    """ConvNeXt's own layers in a small block: ``LayerScale`` and ``StochasticDepth`` (which
    ``ConvNeXtTiny`` uses only with a ``drop_path_rate``, which it does not expose)."""
    from keras.src.applications.convnext import LayerScale, StochasticDepth

    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", groups=4, name="dw")(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="ln")(x)
    x = keras.layers.Dense(8, activation="gelu", name="pw1")(x)
    x = keras.layers.Dense(4, name="pw2")(x)
    x = LayerScale(1e-6, 4, name="scale")(x)
    x = StochasticDepth(0.1, name="drop_path")(x)
    return keras.Model(inputs, keras.layers.Add(name="residual")([inputs, x]))


def test_layer_scale_and_stochastic_depth(tmp_path: Path) -> None:
    """Read as ``affine`` (``x * gamma + 0``) and ``identity``, from the live model and through
    the hardened ``.keras`` path (the allowlist lets Keras load ConvNeXt's module), matching."""
    keras.utils.set_random_seed(2)
    model = _convnext_block()
    perturb(model, 4)
    images = np.random.default_rng(1).standard_normal((2, 6, 6, 4)).astype("float32")
    reference = np.asarray(model(images, training=False))
    archive = weightio.read(model)
    kinds = {layer.name: layer.kind for layer in archive.spec.layers}
    assert kinds["scale"] == "affine" and kinds["drop_path"] == "identity"
    assert_close(reference, keras_view(archive.spec, lambda xs: weightio.run(archive, xs[0]))([images])[0])
    back = weightio.to_keras(archive)
    assert_close(reference, np.asarray(back(images, training=False)))
    model.save(tmp_path / "block.keras")
    result = weightio.convert(tmp_path / "block.keras", tmp_path / "block.safetensors")
    assert result.verification is not None and result.verification.passed
    assert {c.witnesses for c in result.verification.checks} >= {("keras", "numpy")}
    stored = weightio.read(tmp_path / "block.keras")
    assert {layer.name: layer.kind for layer in stored.spec.layers} == kinds


def test_the_applications_allowlist_names_keras_layers() -> None:
    import importlib

    from weightio.frameworks.keras.files import config_checks

    for module, names in config_checks._BY_MODULE.items():
        if module.startswith("keras.src.applications"):
            found = importlib.import_module(module)
            for name in names:
                assert issubclass(getattr(found, name), keras.layers.Layer), (module, name)
