"""A Keras layer called more than once (a siamese encoder, ``d(d(x))``) reads as one spec layer
per call, all calls reading one stored tensor: PyTorch gets tied parameters, numpy and Keras
written back the same numbers, and the parameter count is Keras's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

L = keras.layers


def _siamese() -> Any:
    """``enc`` on both inputs, ``d`` twice in a row on the first: calls 0 and 1 of each."""
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    enc = L.Dense(4, activation="tanh", name="enc")
    d = L.Dense(6, name="d")
    y = L.Concatenate(name="cat")([enc(d(d(a))), enc(b)])
    return keras.Model([a, b], y)


def _conv_twice() -> Any:
    """A conv block applied to its own output (the same kernel twice), as the model's output."""
    x = keras.Input((8, 8, 3))
    conv = L.Conv2D(3, 3, padding="same", activation="relu", name="conv")
    return keras.Model(x, conv(conv(x)))


def _randomized(model: Any, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.standard_normal(tuple(variable.shape)).astype("float32"))
    return model


@pytest.fixture(scope="module", params=["siamese", "conv_twice"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = _randomized(_siamese() if request.param == "siamese" else _conv_twice())
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((3, *i.shape[1:])).astype("float32") for i in model.inputs]
    path = tmp_path_factory.mktemp("shared") / f"{request.param}.keras"
    model.save(path)
    return {"model": model, "x": inputs, "y": model.predict(inputs, verbose=0), "path": path}


def _torch_out(module: Any, inputs: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(*[torch.from_numpy(v) for v in inputs]).numpy()


def test_each_call_is_a_layer_and_each_tensor_is_stored_once(case: dict[str, Any]) -> None:
    model = case["model"]
    archive = weightio.read(model)
    shared = archive.spec.shared_tensors()
    assert shared, "the calls should read one tensor"
    for readers in shared.values():
        assert readers[1].split(".")[0].endswith("__call1")
    assert len(archive.tensors) == len(model.weights)  # stored once, not once per call
    info = weightio.inspect(archive)
    assert info.parameter_count == model.count_params()


def test_numpy_torch_and_keras_compute_the_model(case: dict[str, Any]) -> None:
    archive = weightio.read(case["model"])
    x, y = case["x"], case["y"]
    assert_close(y, weightio.run(archive, x if len(x) > 1 else x[0], layout="source"))
    module = weightio.to_torch(archive)
    channels_first = [np.moveaxis(v, -1, 1) if v.ndim == 4 else v for v in x]
    out = _torch_out(module, channels_first)
    assert_close(y, np.moveaxis(out, 1, -1) if out.ndim == 4 else out)
    # tied in torch: each shared tensor is one Parameter
    assert len(list(module.parameters())) == len(archive.tensors)
    assert sum(p.numel() for p in module.parameters()) == case["model"].count_params()
    back = weightio.to_keras(archive)
    assert_close(y, back.predict(x, verbose=0))


def test_the_keras_file_reads_the_same(case: dict[str, Any]) -> None:
    live, stored = weightio.read(case["model"]), weightio.read(case["path"])
    assert stored.spec.shared_tensors() == live.spec.shared_tensors()
    for key, value in live.tensors.items():
        np.testing.assert_array_equal(stored.tensors[key], value)


def test_torch_round_trip_keeps_the_tie(case: dict[str, Any]) -> None:
    archive = weightio.read(case["model"])
    module = weightio.to_torch(archive)
    again = weightio.read(module, example_input=tuple(
        torch.from_numpy(np.moveaxis(v, -1, 1) if v.ndim == 4 else v) for v in case["x"]))
    assert len(again.tensors) == len(archive.tensors)
    assert again.spec.shared_tensors()


def test_a_name_taken_by_another_layer_is_refused(tmp_path: Path) -> None:
    x = keras.Input((4,))
    d = L.Dense(4, name="d")
    model = keras.Model(x, L.Dense(4, name="d__call1")(d(d(x))))
    with pytest.raises(UnsupportedLayerError, match="d__call1"):
        weightio.read(model)
