"""The rescaling kind (Keras ``Rescaling``, weightio's torch ``Rescaling``): one value or one per
channel, both ways, outputs compared with three witnesses each time."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
from weightio.frameworks.keras.model import run_keras  # noqa: E402
from weightio.frameworks.torch.write.build import run_torch  # noqa: E402
from weightio.layouts.transforms import to_channels_first, to_channels_last  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]


def _keras_cnn(rescalings: list) -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 3))
    x = inp
    for rescaling in rescalings:
        x = rescaling(x)
    x = keras.layers.Conv2D(4, 3, bias_initializer="random_normal")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, bias_initializer="random_normal")(x))


CASES = {
    "scalar": lambda: [keras.layers.Rescaling(1 / 255.0, offset=-0.5)],
    "per_channel": lambda: [keras.layers.Rescaling([0.5, 2.0, -3.0], offset=[0.1, -0.2, 0.3])],
    "both": lambda: [keras.layers.Rescaling(1 / 127.5, offset=-1.0),
                     keras.layers.Rescaling([0.229, 0.224, 0.225], offset=0.0)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_to_torch_and_back(case: str) -> None:
    model = _keras_cnn(CASES[case]())
    x = np.random.default_rng(0).uniform(0, 255, (4, 6, 6, 3)).astype("float32")
    reference = run_keras(model, [x])[0]
    archive = weightio.read(model)
    assert [layer.kind for layer in archive.spec.layers][: len(CASES[case]())] == ["rescaling"] * len(CASES[case]())
    assert_close(reference, weightio.run(archive, to_channels_first(x)))
    module = weightio.to_torch(archive)
    assert_close(reference, run_torch(module, [to_channels_first(x)])[0])
    kinds = [type(m).__name__ for m in module.modules()]
    assert "Rescaling" in kinds
    back = weightio.read(module, example_input=torch.zeros(1, 3, 6, 6))
    rescalings = [(l.scale, l.offset, l.axis) for l in archive.spec.layers if l.kind == "rescaling"]
    assert [(l.scale, l.offset, l.axis) for l in back.spec.layers if l.kind == "rescaling"] == [
        (tuple(np.float32(v) for v in s), tuple(np.float32(v) for v in o), a) for s, o, a in rescalings
    ]
    again = weightio.to_keras(back)
    assert [type(layer).__name__ for layer in again.layers if type(layer).__name__ == "Rescaling"]
    assert_close(reference, run_keras(again, [x])[0])


def test_torch_rescaling_module_on_plain_data_round_trips_through_keras(tmp_path) -> None:
    """Per-channel on axis 1 of a plain (not feature-map) tensor: Keras gets [C, 1] values."""
    from weightio.frameworks.torch.write.core import MODULES

    rescaling = MODULES.get("Rescaling")(
        torch.tensor([0.5, 2.0, 4.0]).reshape(3, 1), torch.tensor([1.0, 0.0, -1.0]).reshape(3, 1), 1, 3
    )
    net = torch.nn.Sequential(rescaling, torch.nn.Flatten(), torch.nn.Linear(15, 2)).eval()
    x = np.random.default_rng(1).standard_normal((3, 3, 5)).astype("float32")
    reference = run_torch(net, [x])[0]
    archive = weightio.read(net, example_input=torch.zeros(1, 3, 5))
    assert archive.spec.layers[0].kind == "rescaling" and archive.spec.layers[0].axis == 1
    assert_close(reference, weightio.run(archive, x))
    model = weightio.to_keras(archive)
    assert_close(reference, run_keras(model, [x])[0])
    path = tmp_path / "plain.keras"
    weightio.convert(net, path, example_input=torch.zeros(1, 3, 5))
    again = weightio.read(path)
    assert again.spec.layers[0].kind == "rescaling" and again.spec.layers[0].axis in (1, -2)
    assert_close(reference, weightio.run(again, x))


def test_rescaling_in_bfloat16_casts_its_constants_first() -> None:
    """Keras casts scale and offset to the compute dtype before use: so do the runtime and torch."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), dtype="bfloat16"),
                              keras.layers.Rescaling(1 / 3.0, offset=0.1, dtype="bfloat16"),
                              keras.layers.Dense(2, dtype="bfloat16")])
    x = np.random.default_rng(2).standard_normal((5, 4)).astype("float32")
    import ml_dtypes

    x = x.astype(ml_dtypes.bfloat16)
    reference = run_keras(model, [x])[0].astype("float32")
    archive = weightio.read(model)
    assert archive.spec.layers[0].dtype == "BF16"
    assert_close(reference, np.asarray(weightio.run(archive, x), dtype="float32"), tol=2e-2)
    assert_close(reference, run_torch(weightio.to_torch(archive), [x])[0].astype("float32"), tol=2e-2)


def test_a_per_feature_rescaling_of_plain_data_is_a_feature_scaler() -> None:
    """Keras ``Rescaling([...])`` on features reads as ``affine`` (scikit-learn's scalers' kind)."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Rescaling([1.0, 2.0, 3.0, 4.0], offset=0.5),
                              keras.layers.Dense(2)])
    archive = weightio.read(model)
    assert archive.spec.layers[0].kind == "affine"
    x = np.random.default_rng(6).standard_normal((3, 4)).astype("float32")
    assert_close(run_keras(model, [x])[0], weightio.run(archive, x))
    assert_close(run_keras(model, [x])[0], run_torch(weightio.to_torch(archive), [x])[0])


def test_feature_map_input_channels_last_layout_is_honoured() -> None:
    model = _keras_cnn(CASES["per_channel"]())
    archive = weightio.read(model)
    layer = archive.spec.layers[0]
    assert layer.axis == 1 and layer.scale == (0.5, 2.0, -3.0)
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype("float32")
    assert_close(run_keras(model, [to_channels_last(x)])[0], weightio.run(archive, x))
