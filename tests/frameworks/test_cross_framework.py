"""Keras <-> PyTorch through the archive, with three witnesses: source, target, numpy runtime."""

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
from weightio.errors import VerificationError, WeightsOnlyArchiveError  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]


def keras_out(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def torch_out(module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def regressor():
    """The classic Keras regressor, trained briefly on a seeded synthetic problem."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 10)).astype("float32")
    y = (x @ rng.standard_normal(10) + np.sin(x[:, 0])).astype("float32")[:, None]
    model = keras.Sequential(
        [keras.Input(shape=(10,)), keras.layers.Dense(64, activation="relu"),
         keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def line_model():
    """Dense(16, relu) -> Dense(1) fitted to y = 2x + 5."""
    keras.utils.set_random_seed(1)
    x = np.linspace(-10, 10, 200, dtype="float32")[:, None]
    model = keras.Sequential(
        [keras.Input(shape=(1,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(x, 2 * x + 5, epochs=60, batch_size=32, verbose=0)
    return model


def test_keras_regressor_to_torch_same_outputs(regressor) -> None:
    archive = weightio.read(regressor)
    module = weightio.to_torch(archive)
    x = np.random.default_rng(5).standard_normal((64, 10)).astype("float32")
    expected = keras_out(regressor, x)
    assert_close(expected, torch_out(module, x))
    assert_close(expected, weightio.run(archive, x))


def test_line_model_runtime_equals_keras_at_ten(line_model) -> None:
    x = np.array([[10.0]], dtype="float32")
    expected = keras_out(line_model, x)
    got = weightio.run(weightio.read(line_model), x)
    assert_close(expected, got)
    assert abs(float(expected[0, 0]) - 25.0) < 1.5  # it did learn 2x + 5


def test_torch_mlp_with_mixed_activations_to_keras() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 16), torch.nn.LeakyReLU(0.1),
        torch.nn.Linear(16, 12), torch.nn.ELU(alpha=0.5),
        torch.nn.Linear(12, 8), torch.nn.Sigmoid(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(8, 4), torch.nn.Softmax(dim=1),
    ).eval()
    archive = weightio.read(module)
    model = weightio.to_keras(archive)
    x = np.random.default_rng(2).standard_normal((32, 6)).astype("float32")
    expected = torch_out(module, x)
    assert_close(expected, keras_out(model, x))
    assert_close(expected, weightio.run(archive, x))


class FunctionalNet(torch.nn.Module):
    """A custom module whose activations are function calls in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 12)
        self.fc2 = torch.nn.Linear(12, 7)
        self.head = torch.nn.Linear(7, 3)

    def forward(self, x):
        x = torch.nn.functional.gelu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return torch.nn.functional.log_softmax(self.head(x), dim=-1)


def test_custom_module_with_functional_activations_traced_and_converted() -> None:
    torch.manual_seed(3)
    module = FunctionalNet().eval()
    archive = weightio.read(module)
    model = weightio.to_keras(archive)
    x = np.random.default_rng(3).standard_normal((16, 5)).astype("float32")
    expected = torch_out(module, x)
    assert_close(expected, keras_out(model, x))
    assert_close(expected, weightio.run(archive, x))
    assert_close(expected, torch_out(weightio.to_torch(archive), x))


def test_keras_torch_keras_round_trip_is_bit_identical(regressor, tmp_path: Path) -> None:
    first = weightio.read(regressor)
    weightio.save(first, tmp_path / "a.safetensors")
    module = weightio.to_torch(weightio.load(tmp_path / "a.safetensors"))
    second = weightio.read(module)
    back = weightio.read(weightio.to_keras(second))
    original = [w for w in regressor.get_weights()]
    returned = [w for w in weightio.to_keras(back).get_weights()]
    assert len(original) == len(returned)
    for a, b in zip(original, returned):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    dense_a = [first.tensors[r.key] for _, _, r in first.spec.tensor_refs()]
    dense_b = [back.tensors[r.key] for _, _, r in back.spec.tensor_refs()]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(dense_a, dense_b))


def test_convert_keras_file_to_pt2_and_archive(regressor, tmp_path: Path) -> None:
    src = tmp_path / "regressor.keras"
    regressor.save(src)
    x = np.random.default_rng(9).standard_normal((8, 10)).astype("float32")
    expected = keras_out(regressor, x)

    result = weightio.convert(src, tmp_path / "regressor.pt2")
    assert result.verification is not None and result.verification.passed
    program = torch.export.load(str(tmp_path / "regressor.pt2"))
    assert_close(expected, program.module()(torch.from_numpy(x)).detach().numpy())

    result = weightio.convert(src, tmp_path / "regressor.safetensors")
    archive = weightio.load(tmp_path / "regressor.safetensors", verify=True)
    record = archive.spec.verification[0]
    assert record.passed and record.seed == 0 and record.atol == 1e-5
    assert {c.witnesses for c in record.checks} == {("keras", "numpy")}
    assert archive.spec.provenance.source_framework == "keras"
    assert archive.spec.provenance.source_file == "regressor.keras"
    assert any("transposed" in t for t in archive.spec.provenance.transforms)
    assert_close(expected, weightio.run(archive, x))

    weightio.convert(tmp_path / "regressor.safetensors", tmp_path / "back.keras")
    assert_close(expected, keras_out(keras.saving.load_model(tmp_path / "back.keras"), x))

    weightio.convert(tmp_path / "regressor.safetensors", tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    module = weightio.to_torch(archive)
    module.load_state_dict(state)
    assert_close(expected, torch_out(module, x))


def test_failed_verification_writes_nothing(regressor, tmp_path: Path) -> None:
    """With zero tolerance the float32 frameworks cannot match the float64 runtime exactly."""
    with pytest.raises(VerificationError, match="nothing was written"):
        weightio.convert(regressor, tmp_path / "out.pt2", atol=0.0, rtol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_weights_only_state_dict_is_refused_by_writers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.save(module.state_dict(), tmp_path / "sd.pt")
    archive = weightio.read(tmp_path / "sd.pt")
    assert archive.spec.weights_only
    with pytest.raises(WeightsOnlyArchiveError):
        weightio.to_keras(archive)
    with pytest.raises(WeightsOnlyArchiveError):
        weightio.to_torch(archive)
    target = torch.nn.Sequential(torch.nn.Linear(3, 2))
    weightio.load_into(archive, target)
    x = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(torch_out(module, x), torch_out(target, x))


def test_load_into_keras_from_torch_archive(regressor) -> None:
    torch.manual_seed(4)
    module = torch.nn.Sequential(
        torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 1),
    ).eval()
    target = keras.models.clone_model(regressor)
    weightio.load_into(weightio.read(module), target)
    x = np.random.default_rng(8).standard_normal((16, 10)).astype("float32")
    assert_close(torch_out(module, x), keras_out(target, x))
