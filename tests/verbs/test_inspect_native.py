"""``inspect --native``: parameters in the source framework's names and shapes.

Held to Keras' own ``layer.weights`` (names, paths, shapes) and ``count_params()``, and to a
PyTorch module's ``state_dict()`` (keys, shapes), for the CLI table and ``--json`` and for
``weightio.inspect``. Native names come with no statistics: that combination is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.errors import InvalidInputError, UnsupportedSourceError

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
L = keras.layers


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "240"}  # the table's cells unwrapped
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def keras_model() -> object:
    """Every weight naming rule: kernels, grouped, depthwise and separable, norms with and without a
    scale, the recurrent cells (one bias each), Bidirectional, a Dense without bias."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3)(inp)
    x = L.BatchNormalization(scale=False)(x)
    x = L.Conv2D(4, 3, groups=4, padding="same")(x)  # read as a depthwise conv, held grouped
    x = L.DepthwiseConv2D(3, use_bias=False)(x)
    x = L.SeparableConv2D(5, 1)(x)
    x = L.Flatten()(x)
    x = L.Dense(6, use_bias=False)(x)
    x = L.Reshape((2, 3))(x)
    x = L.LSTM(4, return_sequences=True)(x)
    x = L.GRU(3, return_sequences=True)(x)
    x = L.Bidirectional(L.LSTM(2, return_sequences=True))(x)
    x = L.SimpleRNN(2, return_sequences=True)(x)
    x = L.LayerNormalization()(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(2)(x))


@pytest.fixture(scope="module")
def keras_file(keras_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("native") / "model.keras"
    keras_model.save(path)
    return path


def _keras_truth(model) -> list[tuple[str, str, str, list[int]]]:
    return [(layer.name, w.name, w.path, list(w.shape)) for layer in model.layers for w in layer.weights]


def _rows(report) -> list[tuple[str, str, str, list[int]]]:
    return [(layer.name, t.param, t.key, t.shape) for layer in report.layers for t in layer.tensors]


def _without_wrapper_paths(rows):
    """Bidirectional's inner layers are named by Keras when built (``forward_lstm_1``) and by
    weightio as ``forward_<wrapper>``: compare the rest of those paths."""
    return [(layer, name, path if "/forward_" not in path and "/backward_" not in path
             else path.split("/", 1)[0] + "/" + path.split("/", 2)[1].split("_")[0] + "/" + path.split("/", 2)[2],
             shape) for layer, name, path, shape in rows]


def test_keras_names_shapes_and_count_match_keras(keras_model) -> None:
    report = weightio.inspect(keras_model, native=True)
    assert report.names == "keras"
    assert _without_wrapper_paths(_rows(report)) == _without_wrapper_paths(_keras_truth(keras_model))
    assert report.parameter_count == keras_model.count_params()
    assert report.trainable_count == sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert report.buffer_count == sum(int(np.prod(w.shape)) for w in keras_model.non_trainable_weights)
    lstm = next(layer for layer in report.layers if layer.kind == "lstm")
    assert [t.param for t in lstm.tensors] == ["kernel", "recurrent_kernel", "bias"]  # one bias
    canonical = weightio.inspect(keras_model)
    assert canonical.names == "canonical"
    assert [t.param for t in next(x for x in canonical.layers if x.kind == "lstm").tensors] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]


def test_keras_file_cli_table_and_json(keras_model, keras_file) -> None:
    done = cli("inspect", str(keras_file), "--native", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["names"] == "keras"
    rows = [(layer["name"], t["param"], t["key"], t["shape"]) for layer in data["layers"] for t in layer["tensors"]]
    assert _without_wrapper_paths(rows) == _without_wrapper_paths(_keras_truth(keras_model))
    assert data["parameter_count"] == keras_model.count_params()
    table = cli("inspect", str(keras_file), "--native")
    assert table.returncode == 0, table.stderr
    assert "Keras' names and shapes" in table.stdout
    assert "kernel[4, 9], recurrent_kernel[3, 9], bias[2, 9]" in table.stdout  # the GRU's
    assert f"{keras_model.count_params():,} parameters" in table.stdout


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.rnn = torch.nn.LSTM(6, 5, batch_first=True)
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 6),
                                        torch.nn.Unflatten(1, (1, 6)))

    def forward(self, x):
        return self.rnn(self.head(self.features(x)))[0]


def test_torch_names_are_the_state_dict(tmp_path) -> None:
    module = Net().eval()
    # rows come in the order the layers run; state_dict() in registration order (rnn before head)
    truth = {key: list(value.shape) for key, value in module.state_dict().items()}
    report = weightio.inspect(module, native=True, example_input=torch.zeros(1, 3, 8, 8))
    assert report.names == "torch"
    rows = [(t.key, t.shape) for layer in report.layers for t in layer.tensors]
    assert dict(rows) == truth and len(rows) == len(truth)
    counter = next(t for layer in report.layers for t in layer.tensors if t.key.endswith("num_batches_tracked"))
    assert (counter.dtype, counter.role) == ("I64", "buffer")
    assert report.trainable_count == sum(p.numel() for p in module.parameters())

    torch.save(module.state_dict(), tmp_path / "net.pt")  # a bare state dict: its own keys
    done = cli("inspect", str(tmp_path / "net.pt"), "--native", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["names"] == "torch"
    assert [(t["key"], t["shape"]) for layer in data["layers"] for t in layer["tensors"]] == list(truth.items())


def test_refusals(keras_file, tmp_path) -> None:
    for extra in ("--stats", "--html"):
        args = [extra, str(tmp_path / "r.html")] if extra == "--html" else [extra]
        done = cli("inspect", str(keras_file), "--native", *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "--native" in done.stderr
    archive = weightio.read(keras_file)
    with pytest.raises(InvalidInputError, match="no statistics"):
        weightio.inspect(archive, native=True, stats=True)
    from sklearn.linear_model import LinearRegression

    fitted = LinearRegression().fit(np.eye(3), np.arange(3.0))
    with pytest.raises(UnsupportedSourceError, match="source is sklearn"):
        weightio.inspect(fitted, native=True)


def test_keras_attention_paths() -> None:
    inp = keras.Input((4, 6))
    model = keras.Model(inp, L.MultiHeadAttention(2, 3)(inp, inp))
    report = weightio.inspect(model, native=True)
    assert _rows(report) == _keras_truth(model)  # query/kernel [6, 2, 3] … attention_output/bias
    assert report.parameter_count == model.count_params()
