"""Keras-side must-shows: a Keras model and its PyTorch conversion diff as identical, and
`explain` on the y = 2x + 5 model writes each step out and ends at the model's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightio", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def line_model():
    """Dense(16, relu) -> Dense(1) fitted to y = 2x + 5 (the README's learner example)."""
    keras.utils.set_random_seed(1)
    x = np.linspace(-10, 10, 200, dtype="float32")[:, None]
    model = keras.Sequential(
        [keras.Input(shape=(1,), name="x"), keras.layers.Dense(16, activation="relu", name="hidden"),
         keras.layers.Dense(1, name="out")],
        name="line",
    )  # explicit names: Keras' automatic ones depend on what the process built before
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(x, 2 * x + 5, epochs=60, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def files(line_model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras-inspect")
    paths = {"keras": folder / "line.keras", "archive": folder / "line.safetensors", "pt": folder / "line.pt"}
    line_model.save(paths["keras"])
    weightio.save(weightio.read(line_model), paths["archive"])
    torch.save(weightio.to_torch(weightio.read(line_model)).state_dict(), paths["pt"])
    return paths


def test_keras_model_and_its_torch_conversion_diff_identical(line_model) -> None:
    module = weightio.to_torch(weightio.read(line_model))
    report = weightio.diff(line_model, module)
    assert report.identical and report.summary.counts["identical"] == 4
    assert report.a.framework == "keras" and report.b.framework == "torch"


def test_keras_file_against_renamed_torch_module_aligns_by_position(line_model, files) -> None:
    """Keras `hidden`/`out` kernels vs PyTorch `fc1`/`fc2` weights: canonical, by position."""

    class Line(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(1, 16)
            self.fc2 = torch.nn.Linear(16, 1)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    module = Line()
    weightio.load_into(weightio.read(line_model), module)
    x = np.linspace(-3, 3, 7, dtype="float32")[:, None]
    assert_close(np.asarray(line_model(x)), module(torch.from_numpy(x)).detach().numpy())
    report = weightio.diff(files["keras"], module)
    assert report.identical and report.alignment == "position"
    assert [(e.name, e.name_b) for e in report.entries] == [
        ("hidden.weight", "fc1.weight"), ("hidden.bias", "fc1.bias"),
        ("out.weight", "fc2.weight"), ("out.bias", "fc2.bias"),
    ]
    with torch.no_grad():
        module.fc2.weight[0, 3] += 0.25
    moved = weightio.diff(files["keras"], module)
    assert [e.name for e in moved.changed()] == ["out.weight"]
    assert moved.changed()[0].changed_count == 1


def test_cli_keras_file_vs_torch_state_dict_exit_0(files) -> None:
    result = cli("diff", str(files["keras"]), str(files["pt"]), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["identical"] and {e["status"] for e in data["entries"]} == {"identical"}
    assert len(data["entries"]) == 4


def test_explain_line_model_api(line_model, files) -> None:
    archive = weightio.load(files["archive"])
    explanation = weightio.explain(archive, np.array([10.0], dtype="float32"))
    assert [s.layer for s in explanation.steps] == ["hidden", "out"]
    first, second = explanation.steps
    assert first.formula == "relu(x · Wᵀ + b)" and second.formula == "x · Wᵀ + b"
    assert first.input.values == [10.0]
    pre = np.array(first.pre_activation.values)
    w = np.asarray(archive.tensors["hidden.weight"], dtype=np.float64)
    b = np.asarray(archive.tensors["hidden.bias"], dtype=np.float64)
    np.testing.assert_allclose(pre, w[:, 0] * 10.0 + b, rtol=1e-12)
    np.testing.assert_array_equal(np.array(first.output.values), np.maximum(pre, 0.0))
    assert second.input.values == first.output.values  # each step feeds the next
    assert len(first.expansion) == 16 and len(second.expansion) == 1
    expected = weightio.run(archive, np.array([[10.0]], dtype="float32"))
    np.testing.assert_array_equal(explanation.output_arrays()[0], expected)
    assert explanation.outputs["out"].values == expected[0].tolist()
    assert_close(np.asarray(line_model(np.array([[10.0]], dtype="float32"))), expected)
    assert abs(float(expected[0, 0]) - 25.0) < 1.5  # it learned 2x + 5
    text = str(explanation)
    assert text.index("step 1: hidden") < text.index("step 2: out") < text.index("model output")


def test_explain_line_model_cli(files) -> None:
    archive = weightio.load(files["archive"])
    expected = weightio.run(archive, np.array([[10.0]], dtype="float32"))
    result = cli("explain", str(files["archive"]), "--input", "10")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "formula: hidden = relu(x · Wᵀ + b)" in out and "formula: out = x · Wᵀ + b" in out
    assert "pre-activation" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("model output out (= weightio.run)")
    assert f"{float(expected[0, 0]):.4f}"[:6] in last
    data = json.loads(cli("explain", str(files["archive"]), "--input", "[[10]]", "--json").stdout)
    assert data["outputs"]["out"]["values"] == expected[0].tolist()
    assert [s["kind"] for s in data["steps"]] == ["dense", "dense"]
