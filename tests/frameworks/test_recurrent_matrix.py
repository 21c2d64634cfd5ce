"""Every normalisation, sequence and graph-operation kind, both directions, three witnesses.

Each Keras case builds a real Keras model, gives it non-trivial weights (BatchNorm running
statistics non-zero, biases non-zero), reads it, and compares Keras, the numpy runtime and the
built PyTorch module on the same random inputs. Each PyTorch case does the same from a real
``nn.Module`` to a built Keras model. Tolerance: float32, ``1e-5 * max(1, max|ref|)``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
nn = torch.nn

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

L = keras.layers
VOCAB = 13


def randomize_keras(model, seed: int = 0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for var in layer.weights:
            shape = tuple(var.shape)
            value = rng.standard_normal(shape) * 0.5
            if "variance" in var.path:
                value = np.abs(value) + 0.5
            if var.path.endswith("count"):
                continue
            var.assign(value.astype(var.dtype))
    return model


def randomize_torch(module, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            value = torch.randn(tensor.shape, generator=gen) * 0.5
            if name.endswith("running_var"):
                value = value.abs() + 0.5
            tensor.copy_(value)
    return module.eval()


def keras_out(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def torch_out(module, x):
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def floats(*shape, seed=3):
    return np.random.default_rng(seed).standard_normal((4, *shape)).astype("float32")


def ints(steps, seed=3):
    return np.random.default_rng(seed).integers(0, VOCAB, (4, steps)).astype("int32")


def seq(layer, shape, dtype="float32"):
    inp = keras.Input(shape, dtype=dtype)
    return keras.Model(inp, layer(inp))


def functional(shape, body):
    inp = keras.Input(shape)
    return keras.Model(inp, body(inp))


def _two_dense(op):
    def body(x):
        a = L.Dense(6, activation="tanh")(x)
        b = L.Dense(6)(x)
        return op([a, b])
    return body


KERAS_CASES = {
    "batch_norm_features": (lambda: seq(L.BatchNormalization(), (5,)), lambda: floats(5)),
    "batch_norm_eps_momentum": (lambda: seq(L.BatchNormalization(epsilon=0.25, momentum=0.9), (5,)), lambda: floats(5)),
    "batch_norm_no_center_scale": (lambda: seq(L.BatchNormalization(center=False, scale=False), (5,)), lambda: floats(5)),
    "batch_norm_no_center": (lambda: seq(L.BatchNormalization(center=False), (5,)), lambda: floats(5)),
    "batch_norm_channels_first_1d": (lambda: seq(L.BatchNormalization(axis=1), (3, 6)), lambda: floats(3, 6)),
    "batch_norm_channels_first_2d": (lambda: seq(L.BatchNormalization(axis=1), (3, 4, 5)), lambda: floats(3, 4, 5)),
    "layer_norm": (lambda: seq(L.LayerNormalization(), (4, 6)), lambda: floats(4, 6)),
    "layer_norm_two_axes": (lambda: seq(L.LayerNormalization(axis=[-2, -1], epsilon=1e-5), (4, 6)), lambda: floats(4, 6)),
    "layer_norm_no_scale": (lambda: seq(L.LayerNormalization(scale=False), (6,)), lambda: floats(6)),
    "layer_norm_no_affine": (lambda: seq(L.LayerNormalization(center=False, scale=False), (3, 6)), lambda: floats(3, 6)),
    "group_norm": (lambda: seq(L.GroupNormalization(groups=2), (6,)), lambda: floats(6)),
    "normalization": (lambda: seq(L.Normalization(mean=[1.0, -2.0, 0.5, 3.0], variance=[2.0, 0.5, 1.0, 4.0]), (4,)), lambda: floats(4)),
    "embedding": (lambda: seq(L.Embedding(VOCAB, 5), (7,), dtype="int32"), lambda: ints(7)),
    "simple_rnn": (lambda: seq(L.SimpleRNN(5), (6, 3)), lambda: floats(6, 3)),
    "simple_rnn_relu_sequences": (lambda: seq(L.SimpleRNN(5, activation="relu", return_sequences=True), (6, 3)), lambda: floats(6, 3)),
    "lstm": (lambda: seq(L.LSTM(5), (6, 3)), lambda: floats(6, 3)),
    "lstm_sequences_no_bias": (lambda: seq(L.LSTM(5, return_sequences=True, use_bias=False), (6, 3)), lambda: floats(6, 3)),
    "gru": (lambda: seq(L.GRU(5), (6, 3)), lambda: floats(6, 3)),
    "gru_sequences": (lambda: seq(L.GRU(5, return_sequences=True), (6, 3)), lambda: floats(6, 3)),
    "bidirectional_lstm_sequences": (lambda: seq(L.Bidirectional(L.LSTM(4, return_sequences=True)), (6, 3)), lambda: floats(6, 3)),
    "bidirectional_lstm_last": (lambda: seq(L.Bidirectional(L.LSTM(4)), (6, 3)), lambda: floats(6, 3)),
    "bidirectional_gru_last": (lambda: seq(L.Bidirectional(L.GRU(4)), (6, 3)), lambda: floats(6, 3)),
    "bidirectional_rnn_last": (lambda: seq(L.Bidirectional(L.SimpleRNN(4)), (6, 3)), lambda: floats(6, 3)),
    "stacked_lstm": (lambda: keras.Sequential([keras.Input((6, 3)), L.LSTM(5, return_sequences=True), L.LSTM(4)]), lambda: floats(6, 3)),
    "add": (lambda: functional((4,), _two_dense(L.Add())), lambda: floats(4)),
    "subtract": (lambda: functional((4,), _two_dense(L.Subtract())), lambda: floats(4)),
    "multiply": (lambda: functional((4,), _two_dense(L.Multiply())), lambda: floats(4)),
    "average": (lambda: functional((4,), _two_dense(L.Average())), lambda: floats(4)),
    "maximum": (lambda: functional((4,), _two_dense(L.Maximum())), lambda: floats(4)),
    "minimum": (lambda: functional((4,), _two_dense(L.Minimum())), lambda: floats(4)),
    "concatenate": (lambda: functional((4,), _two_dense(L.Concatenate())), lambda: floats(4)),
    "ops_add": (lambda: functional((4,), _two_dense(lambda ab: ab[0] + ab[1])), lambda: floats(4)),
    "last_step": (lambda: functional((6, 3), lambda x: L.Dense(2)(L.LSTM(4, return_sequences=True)(x)[:, -1])), lambda: floats(6, 3)),
    "multi_head_attention": (lambda: functional((5, 8), lambda x: L.MultiHeadAttention(2, 4)(x, x)), lambda: floats(5, 8)),
    "multi_head_attention_no_bias": (lambda: functional((5, 8), lambda x: L.MultiHeadAttention(4, 2, use_bias=False)(x, x)), lambda: floats(5, 8)),
    "bidirectional_last_step": (lambda: functional((6, 3), lambda x: L.Bidirectional(L.GRU(3, return_sequences=True))(x)[:, -1, :]), lambda: floats(6, 3)),
}


@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_keras_to_torch(case: str) -> None:
    build, data = KERAS_CASES[case]
    keras.utils.set_random_seed(0)
    model = randomize_keras(build())
    x = data()
    expected = keras_out(model, x)
    archive = weightio.read(model)
    assert not [layer.name for layer in archive.spec.layers if layer.kind == "opaque"]
    assert_close(expected, weightio.run(archive, x))
    module = weightio.to_torch(archive)
    assert_close(expected, torch_out(module, x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return x + self.fc(x)


class Binary(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.a, self.b, self.op = nn.Linear(4, 6), nn.Linear(4, 6), op

    def forward(self, x):
        return self.op(torch.tanh(self.a(x)), self.b(x))


class Recurrent(nn.Module):
    """A recurrent module followed by one of the ways users take its result."""

    def __init__(self, rnn, take: str) -> None:
        super().__init__()
        self.rnn, self.take = rnn, take

    def forward(self, x):
        if self.take == "sequence":
            out, _ = self.rnn(x)
            return out
        if self.take == "last":
            return self.rnn(x)[0][:, -1, :]
        if self.take == "h_n":
            return self.rnn(x)[1][-1]
        if self.take == "lstm_h_n":
            _, (h_n, _) = self.rnn(x)
            return h_n[-1]
        if self.take == "both_h_n":  # the usual bidirectional classifier's final state
            _, h_n = self.rnn(x)
            return torch.cat((h_n[-2], h_n[-1]), dim=1)
        if self.take == "lstm_both_h_n":
            _, (h_n, _) = self.rnn(x)
            return torch.cat((h_n[-2], h_n[-1]), dim=-1)
        if self.take == "backward_h_n_first":  # not Keras's order: refused
            h_n = self.rnn(x)[1]
            return torch.cat((h_n[-1], h_n[-2]), dim=1)
        if self.take == "forward_h_n_alone":
            return self.rnn(x)[1][-2]
        raise AssertionError(self.take)


class SelfAttention(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, bias=bias)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.attn(x, x, x, need_weights=False)
        return self.fc(out + x)


class TextModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, tokens):
        out, _ = self.lstm(self.embedding(tokens))
        return self.fc(out[:, -1])


def _bf(cls, *args, **kwargs):
    return cls(*args, batch_first=True, **kwargs)


TORCH_CASES = {
    "batch_norm_features": (lambda: nn.BatchNorm1d(5), lambda: floats(5)),
    "batch_norm_eps": (lambda: nn.BatchNorm1d(5, eps=0.2, momentum=0.3), lambda: floats(5)),
    "batch_norm_no_affine": (lambda: nn.BatchNorm1d(5, affine=False), lambda: floats(5)),
    "batch_norm_1d_sequence": (lambda: nn.BatchNorm1d(3), lambda: floats(3, 6)),
    "batch_norm_2d": (lambda: nn.BatchNorm2d(3), lambda: floats(3, 4, 5)),
    "layer_norm": (lambda: nn.LayerNorm(6), lambda: floats(4, 6)),
    "layer_norm_two_axes": (lambda: nn.LayerNorm([4, 6], eps=1e-3), lambda: floats(4, 6)),
    "layer_norm_no_affine": (lambda: nn.LayerNorm(6, elementwise_affine=False), lambda: floats(6)),
    "layer_norm_no_bias": (lambda: nn.LayerNorm(6, bias=False), lambda: floats(6)),
    "group_norm": (lambda: nn.GroupNorm(2, 6), lambda: floats(6)),
    "group_norm_channels_first": (lambda: nn.GroupNorm(3, 6), lambda: floats(6, 5)),
    "embedding": (lambda: nn.Embedding(VOCAB, 5), lambda: ints(7).astype("int64")),
    "rnn_last": (lambda: Recurrent(_bf(nn.RNN, 3, 5), "last"), lambda: floats(6, 3)),
    "rnn_relu_sequence": (lambda: Recurrent(_bf(nn.RNN, 3, 5, nonlinearity="relu"), "sequence"), lambda: floats(6, 3)),
    "rnn_h_n": (lambda: Recurrent(_bf(nn.RNN, 3, 5), "h_n"), lambda: floats(6, 3)),
    "lstm_last": (lambda: Recurrent(_bf(nn.LSTM, 3, 5), "last"), lambda: floats(6, 3)),
    "lstm_h_n": (lambda: Recurrent(_bf(nn.LSTM, 3, 5), "lstm_h_n"), lambda: floats(6, 3)),
    "lstm_no_bias_sequence": (lambda: Recurrent(_bf(nn.LSTM, 3, 5, bias=False), "sequence"), lambda: floats(6, 3)),
    "lstm_stacked": (lambda: Recurrent(_bf(nn.LSTM, 3, 5, num_layers=2), "last"), lambda: floats(6, 3)),
    "gru_last": (lambda: Recurrent(_bf(nn.GRU, 3, 5), "last"), lambda: floats(6, 3)),
    "gru_stacked_h_n": (lambda: Recurrent(_bf(nn.GRU, 3, 5, num_layers=3), "h_n"), lambda: floats(6, 3)),
    "bidirectional_lstm_sequence": (lambda: Recurrent(_bf(nn.LSTM, 3, 4, bidirectional=True), "sequence"), lambda: floats(6, 3)),
    "bidirectional_gru_last_step": (lambda: Recurrent(_bf(nn.GRU, 3, 4, bidirectional=True), "last"), lambda: floats(6, 3)),
    "bidirectional_lstm_h_n": (lambda: Recurrent(_bf(nn.LSTM, 3, 4, bidirectional=True), "lstm_both_h_n"), lambda: floats(6, 3)),
    "bidirectional_gru_h_n": (lambda: Recurrent(_bf(nn.GRU, 3, 4, bidirectional=True), "both_h_n"), lambda: floats(6, 3)),
    "bidirectional_stacked_rnn_h_n": (lambda: Recurrent(_bf(nn.RNN, 3, 4, bidirectional=True, num_layers=2), "both_h_n"), lambda: floats(6, 3)),
    "bidirectional_stacked_rnn": (lambda: Recurrent(_bf(nn.RNN, 3, 4, bidirectional=True, num_layers=2), "sequence"), lambda: floats(6, 3)),
    "residual": (Residual, lambda: floats(6)),
    "multi_head_attention": (SelfAttention, lambda: floats(5, 8)),
    "multi_head_attention_no_bias": (lambda: SelfAttention(bias=False), lambda: floats(5, 8)),
    "add": (lambda: Binary(torch.add), lambda: floats(4)),
    "subtract": (lambda: Binary(torch.sub), lambda: floats(4)),
    "multiply": (lambda: Binary(lambda a, b: a * b), lambda: floats(4)),
    "maximum": (lambda: Binary(torch.maximum), lambda: floats(4)),
    "minimum": (lambda: Binary(torch.minimum), lambda: floats(4)),
    "concatenate": (lambda: Binary(lambda a, b: torch.cat([a, b], dim=1)), lambda: floats(4)),
    "text_model": (TextModel, lambda: ints(7).astype("int64")),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_to_keras(case: str) -> None:
    build, data = TORCH_CASES[case]
    torch.manual_seed(0)
    module = build()
    if type(module).__module__.startswith("torch.nn"):
        module = nn.Sequential(module)  # fx traces into a bare leaf module; users hold models
    module = randomize_torch(module)
    x = data()
    expected = torch_out(module, x)
    archive = weightio.read(module, example_input=torch.from_numpy(x))
    assert_close(expected, weightio.run(archive, x))
    model = weightio.to_keras(archive)
    assert_close(expected, keras_out(model, x))
    # and back: the Keras model read again gives the same numbers in PyTorch
    again = weightio.to_torch(weightio.read(model))
    assert_close(expected, torch_out(again, x))


def test_every_new_kind_has_a_case_in_both_directions() -> None:
    """The matrix covers each kind this family adds, from each framework."""
    kinds = {"batch_norm", "layer_norm", "group_norm", "embedding", "simple_rnn", "lstm", "gru",
             "add", "subtract", "multiply", "maximum", "minimum", "concatenate", "last_step"}
    keras_kinds = {k for case in KERAS_CASES for k in kinds if case.startswith(k) or k in case}
    torch_kinds = {k for case in TORCH_CASES for k in kinds if case.startswith(k) or k in case}
    assert {"normalization", "average"} <= set(KERAS_CASES)  # Keras-only kinds
    assert kinds - {"last_step"} <= keras_kinds | {"simple_rnn"}
    assert kinds - {"simple_rnn", "last_step"} <= torch_kinds | {"lstm", "gru"}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_static_output_shapes_agree_with_the_runtime(case: str) -> None:
    """Each kind's ``output_shape`` (what ``ModelSpec`` bounds sizes with) matches the runtime."""
    from weightio.runtime.shapes import tensor_shapes
    from weightio.spec.model import activation_shapes

    build, data = TORCH_CASES[case]
    torch.manual_seed(0)
    module = build()
    if type(module).__module__.startswith("torch.nn"):
        module = nn.Sequential(module)
    archive = weightio.read(module, example_input=torch.from_numpy(data()))
    ran = tensor_shapes(archive)
    assert ran is not None
    for name, shape in activation_shapes(archive.spec).items():
        if shape is not None:
            assert tuple(shape) == ran[name], (name, shape, ran[name])


@pytest.mark.parametrize("take", ["backward_h_n_first", "forward_h_n_alone"])
def test_other_uses_of_a_bidirectional_state_are_typed_refusals(take: str) -> None:
    """Only ``cat([h_n[-2], h_n[-1]], -1)`` is Keras's ``Bidirectional`` final state."""
    from weightio.errors import UnsupportedLayerError

    module = Recurrent(_bf(nn.GRU, 3, 4, bidirectional=True), take).eval()
    with pytest.raises(UnsupportedLayerError, match=r"h_n\[-2\], h_n\[-1\]"):
        weightio.read(module, example_input=torch.from_numpy(floats(6, 3)))
