"""End to end through ``weightio.convert`` (verified, written to disk) for sequence models and
residual blocks, and the refusals: every setting with no exact mapping is named, never guessed."""

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
from test_recurrent_matrix import (  # noqa: E402
    Recurrent,
    Residual,
    TextModel,
    keras_out,
    randomize_keras,
    randomize_torch,
    torch_out,
)

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402
from weightio.verbs.proof import probe_inputs

pytestmark = [pytest.mark.keras, pytest.mark.torch]
L = keras.layers


def keras_text_model(vocab: int = 50):
    inp = keras.Input((9,), dtype="int32", name="tokens")
    x = L.Embedding(vocab, 8)(inp)
    x = L.LSTM(6)(x)
    out = L.Dense(3, activation="softmax")(x)
    return randomize_keras(keras.Model(inp, out), seed=7)


def test_probe_indices_cover_the_vocabulary() -> None:
    archive = weightio.read(keras_text_model(vocab=50))
    (tokens,) = probe_inputs(archive.spec, samples=64)
    assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() < 50
    assert tokens.max() > 40  # not the old {0, 1} probe: the whole table is exercised


def test_keras_text_model_to_torch_file(tmp_path) -> None:
    model = keras_text_model()
    result = weightio.convert(model, tmp_path / "text.pt")
    assert result.verification is not None and result.verification.passed
    tokens = np.random.default_rng(0).integers(0, 50, (5, 9)).astype("int32")
    module = weightio.to_torch(result.archive)
    assert_close(keras_out(model, tokens), torch_out(module, tokens.astype("int64")))
    state = torch.load(tmp_path / "text.pt", weights_only=True)
    # Keras's single LSTM bias became bias_ih, with bias_hh exactly zero
    (bias_hh,) = [value for key, value in state.items() if key.endswith("bias_hh_l0")]
    assert not torch.any(bias_hh)


def test_torch_text_model_to_keras_file(tmp_path) -> None:
    module = randomize_torch(TextModel(), seed=3)
    tokens = torch.randint(0, 13, (2, 7))
    result = weightio.convert(module, tmp_path / "text.keras", example_input=tokens)
    assert result.verification is not None and result.verification.passed
    loaded = keras.saving.load_model(tmp_path / "text.keras", safe_mode=True)
    x = np.random.default_rng(1).integers(0, 13, (5, 7))
    assert_close(torch_out(module, x), keras_out(loaded, x))


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN"])
def test_keras_recurrent_to_pytorch(layer: str, tmp_path) -> None:
    """Trained-looking weights, biases non-zero, sequences of 12 steps, both return modes."""
    inp = keras.Input((12, 4))
    x = getattr(L, layer)(7, return_sequences=True)(inp)
    x = getattr(L, layer)(5)(x)
    model = randomize_keras(keras.Model(inp, L.Dense(2)(x)), seed=11)
    result = weightio.convert(model, tmp_path / "rnn.pt")
    assert result.verification.passed
    module = weightio.to_torch(result.archive)
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU, "SimpleRNN": nn.RNN}[layer]
    assert sum(isinstance(m, cls) for m in module.modules()) == 2
    x = np.random.default_rng(2).standard_normal((6, 12, 4)).astype("float32")
    assert_close(keras_out(model, x), torch_out(module, x))


def keras_residual_block():
    inp = keras.Input((8,))
    h = L.Dense(8, activation="relu")(inp)
    h = L.Dense(8)(h)
    h = L.Add()([inp, h])
    h = L.LayerNormalization()(h)
    out = L.Dense(2)(L.Activation("relu")(h))
    return randomize_keras(keras.Model(inp, out), seed=5)


def test_keras_residual_block_to_torch_and_back(tmp_path) -> None:
    model = keras_residual_block()
    result = weightio.convert(model, tmp_path / "res.pt")
    assert result.verification.passed
    module = weightio.to_torch(result.archive)
    x = np.random.default_rng(4).standard_normal((16, 8)).astype("float32")
    expected = keras_out(model, x)
    assert_close(expected, torch_out(module, x))
    back = weightio.to_keras(weightio.read(module, example_input=torch.from_numpy(x)))
    assert_close(expected, keras_out(back, x))


def test_torch_residual_block_to_keras(tmp_path) -> None:
    module = randomize_torch(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), Residual(), nn.Linear(6, 2)))
    result = weightio.convert(module, tmp_path / "res.keras")
    assert result.verification.passed
    assert "add" in [layer.kind for layer in result.archive.spec.layers]
    loaded = keras.saving.load_model(tmp_path / "res.keras", safe_mode=True)
    x = np.random.default_rng(6).standard_normal((16, 5)).astype("float32")
    assert_close(torch_out(module, x), keras_out(loaded, x))


def test_batch_norm_epsilon_and_statistics_travel_exactly() -> None:
    """Keras's 1e-3 stays 1e-3 in PyTorch (not torch's 1e-5); running stats bit-exact."""
    model = randomize_keras(keras.Sequential([keras.Input((4,)), L.BatchNormalization(momentum=0.9)]))
    archive = weightio.read(model)
    bn = archive.spec.layers[0]
    assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.1)
    module = weightio.to_torch(archive)
    torch_bn = module[0]
    assert torch_bn.eps == pytest.approx(1e-3) and torch_bn.momentum == pytest.approx(0.1)
    np.testing.assert_array_equal(torch_bn.running_var.numpy(), model.layers[0].moving_variance.numpy())


def test_torch_lstm_two_biases_sum_into_keras_bias() -> None:
    module = randomize_torch(Recurrent(nn.LSTM(3, 4, batch_first=True), "sequence"))
    archive = weightio.read(module, example_input=torch.zeros(2, 5, 3))
    model = weightio.to_keras(archive)
    kernel, recurrent, bias = model.layers[-1].get_weights()
    lstm = module.rnn
    assert lstm.bias_hh_l0.abs().min() > 0  # a real sum, not bias + 0
    np.testing.assert_array_equal(kernel, lstm.weight_ih_l0.detach().numpy().T)
    np.testing.assert_allclose(bias, (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(), rtol=0, atol=0)


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        (lambda: L.GRU(4, reset_after=False), "reset_after=False"),
        (lambda: L.LSTM(4, recurrent_activation="hard_sigmoid"), "recurrent_activation"),
        (lambda: L.GRU(4, activation="relu"), "activation"),
        (lambda: L.LSTM(4, go_backwards=True), "go_backwards"),
        (lambda: L.Bidirectional(L.LSTM(4), merge_mode="sum"), "merge_mode"),
    ],
)
def test_keras_recurrent_without_exact_mapping_is_refused_by_name(layer, words) -> None:
    built = layer()
    model = keras.Sequential([keras.Input((5, 3)), built])
    archive = weightio.read(model)
    opaque = archive.spec.layers[0]
    assert opaque.kind == "opaque" and words in opaque.reason
    with pytest.raises(UnsupportedLayerError, match=words) as info:
        weightio.to_torch(archive)
    assert info.value.layer == built.name


def test_masking_embedding_is_refused() -> None:
    model = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(10, 3, mask_zero=True), L.LSTM(2)])
    archive = weightio.read(model)
    assert archive.spec.layers[0].kind == "opaque" and "mask_zero" in archive.spec.layers[0].reason


def test_time_major_torch_rnn_runs_but_keras_refuses() -> None:
    module = randomize_torch(nn.Sequential(nn.GRU(3, 4)))  # batch_first=False: (T, N, F)

    class Take(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = module[0]

        def forward(self, x):
            return self.rnn(x)[0][-1]

    wrapped = Take().eval()
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32")
    archive = weightio.read(wrapped, example_input=torch.from_numpy(x))
    assert archive.spec.layers[0].return_sequences is False
    assert_close(torch_out(wrapped, x), weightio.run(archive, x))
    assert_close(torch_out(wrapped, x), torch_out(weightio.to_torch(archive), x))
    with pytest.raises(UnsupportedLayerError, match="batch_first"):
        weightio.to_keras(archive)


def test_bidirectional_h_n_is_refused() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True)

        def forward(self, x):
            return self.rnn(x)[1][-1]

    with pytest.raises(UnsupportedLayerError, match="h_n"):
        weightio.read(Model(), example_input=torch.zeros(2, 5, 3))


def test_constant_operand_is_refused() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) + 1.0

    with pytest.raises(UnsupportedLayerError):
        weightio.read(Model())


def test_batch_norm_without_running_stats_is_refused() -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(UnsupportedLayerError, match="track_running_stats"):
        weightio.read(module)


def test_channels_last_batch_norm_on_sequences_is_refused_for_torch() -> None:
    """Keras BN(axis=-1) on (N, T, F) normalises F; torch BatchNorm1d normalises axis 1."""
    model = randomize_keras(keras.Sequential([keras.Input((5, 3)), L.BatchNormalization()]))
    archive = weightio.read(model)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    assert_close(keras_out(model, x), weightio.run(archive, x))
    with pytest.raises(UnsupportedLayerError, match="channels"):
        weightio.to_torch(archive)


def test_cross_attention_is_kept_opaque_with_its_reason() -> None:
    q, v = keras.Input((4, 8)), keras.Input((6, 8))
    model = keras.Model([q, v], L.MultiHeadAttention(2, 4, name="cross")(q, v))
    layer = weightio.read(model).spec.layer("cross")
    assert layer.kind == "opaque" and "cross-attention" in layer.reason


def test_masked_torch_attention_is_refused() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, is_causal=True, attn_mask=None)[0]

    with pytest.raises(UnsupportedLayerError, match="causal"):
        weightio.read(Masked(), example_input=torch.zeros(2, 5, 8))


def test_returning_the_whole_tuple_is_refused() -> None:
    class Whole(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(x)

    with pytest.raises(UnsupportedLayerError, match="tuple"):
        weightio.read(Whole(), example_input=torch.zeros(2, 5, 3))


def test_load_into_keras_and_torch_for_recurrent_attention_and_norms() -> None:
    """load_into pairs by order and converts layouts (GRU gate order, packed attention)."""
    def build_keras():
        inp = keras.Input((6, 8))
        h = L.MultiHeadAttention(2, 4)(inp, inp)
        h = L.LayerNormalization()(h)
        h = L.GRU(5)(h)
        return keras.Model(inp, L.BatchNormalization()(h))

    source = randomize_keras(build_keras(), seed=21)
    target = randomize_keras(build_keras(), seed=22)
    x = np.random.default_rng(0).standard_normal((3, 6, 8)).astype("float32")
    archive = weightio.read(source)
    weightio.load_into(archive, target)
    assert_close(keras_out(source, x), keras_out(target, x))

    module = weightio.to_torch(archive)
    fresh = randomize_torch(weightio.to_torch(archive), seed=5)
    weightio.load_into(archive, fresh)
    assert_close(torch_out(module, x), torch_out(fresh, x))


def test_indexing_a_plain_tensor_is_refused() -> None:
    class First(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x)[0]  # the first sample, not a tuple element

    with pytest.raises(UnsupportedLayerError, match="tuple elements"):
        weightio.read(First())
