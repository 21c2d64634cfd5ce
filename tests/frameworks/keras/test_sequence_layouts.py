"""Sequences ``(batch, steps, features)`` keep their axes through every reader and writer.

Issue 14's wrong-numbers finding: text models read without complaint, then computed on steps
as if they were features (exactly wrong when the two sizes are equal, a matmul crash when not).
Each model here runs at a sequence length equal to a feature size and at one that differs, and
Keras, the numpy runtime, the PyTorch module and the Keras model written back must agree.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

L = keras.layers
VOCAB, EMBED = 40, 8


def _text_cnn(steps: int) -> object:
    inp = keras.Input((steps,), dtype="int32")
    x = L.Embedding(VOCAB, EMBED)(inp)
    x = L.Conv1D(EMBED, 3, activation="relu", bias_initializer="random_normal")(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(inp, L.Dense(3, bias_initializer="random_normal")(x))


def _bilstm(steps: int) -> object:
    inp = keras.Input((steps,), dtype="int32")
    x = L.Embedding(VOCAB, EMBED)(inp)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True, bias_initializer="random_normal"))(x)
    x = L.GlobalMaxPooling1D()(x)  # 2 * 4 = 8 features
    return keras.Model(inp, L.Dense(3, bias_initializer="random_normal")(x))


def _transformer(steps: int) -> object:
    inp = keras.Input((steps,), dtype="int32")
    x = L.Embedding(VOCAB, EMBED)(inp)
    attended = L.MultiHeadAttention(2, EMBED // 2, bias_initializer="random_normal")(x, x)
    x = L.LayerNormalization(beta_initializer="random_normal")(L.Add()([x, attended]))
    ffn = L.Dense(16, activation="relu", bias_initializer="random_normal")(x)
    ffn = L.Dense(EMBED, bias_initializer="random_normal")(ffn)
    x = L.LayerNormalization(beta_initializer="random_normal")(L.Add()([x, ffn]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(3, bias_initializer="random_normal")(x))


MODELS = {"text_cnn": _text_cnn, "bilstm": _bilstm, "transformer": _transformer}


@pytest.mark.parametrize("steps", [EMBED, 5], ids=["steps_eq_features", "steps_ne_features"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_text_model_matches_everywhere(name: str, steps: int) -> None:
    keras.utils.set_random_seed(7)
    model = MODELS[name](steps)
    tokens = np.random.default_rng(1).integers(0, VOCAB, (3, steps)).astype("int32")
    reference = np.asarray(model(tokens))
    archive = weightio.read(model)
    assert not [layer.name for layer in archive.spec.layers if layer.kind == "opaque"]
    assert_close(reference, weightio.run(archive, tokens))
    module = weightio.to_torch(archive)
    with torch.no_grad():
        assert_close(reference, module(torch.from_numpy(tokens)).numpy())
    back = weightio.to_keras(archive)
    assert_close(reference, np.asarray(back(tokens)))
    # and back from the PyTorch module weightio built: PyTorch -> Keras
    again = weightio.read(module, example_input=torch.from_numpy(tokens))
    assert_close(reference, weightio.run(again, tokens))
    assert_close(reference, np.asarray(weightio.to_keras(again)(tokens)))


def test_conv1d_output_read_by_an_lstm_moves_back_to_steps() -> None:
    """A feature map read by a recurrent layer: Keras's ``(batch, steps, channels)`` is a plain
    sequence again, one exact permute away from the canonical ``(batch, channels, steps)``.
    """
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6, 6)),
        L.Conv1D(6, 2, padding="same"),
        L.GRU(6, return_sequences=True),
        L.Conv1D(4, 3),
        L.Flatten(),
        L.Dense(2),
    ])
    data = np.random.default_rng(2).standard_normal((2, 6, 6)).astype("float32")
    reference = np.asarray(model(data))
    archive = weightio.read(model)
    assert [layer.kind for layer in archive.spec.layers].count("permute") == 2
    x_cf = np.ascontiguousarray(np.moveaxis(data, -1, 1))  # the input is read as a feature map
    assert_close(reference, weightio.run(archive, x_cf))
    with torch.no_grad():
        assert_close(reference, weightio.to_torch(archive)(torch.from_numpy(x_cf)).numpy())
    assert_close(reference, np.asarray(weightio.to_keras(archive)(data)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_text_model_read_from_its_keras_file_is_right(name: str, tmp_path: object) -> None:
    """The ``.keras`` reader (no Keras needed) reads the same forms: ``weightio convert`` of a
    file without Keras checks numpy against the written module, and both must be right.
    """
    keras.utils.set_random_seed(9)
    model = MODELS[name](6)
    path = tmp_path / f"{name}.keras"  # type: ignore[operator]
    model.save(path)
    tokens = np.random.default_rng(4).integers(0, VOCAB, (2, 6)).astype("int32")
    reference = np.asarray(model(tokens))
    archive = weightio.read(path)
    assert_close(reference, weightio.run(archive, tokens))
    with torch.no_grad():
        assert_close(reference, weightio.to_torch(archive)(torch.from_numpy(tokens)).numpy())


@pytest.mark.parametrize("keepdims", [False, True])
def test_sequential_pooling_of_a_sequence_without_build_config(keepdims: bool) -> None:
    """Found by the long generative run: in a Sequential, Keras records no input shape for a
    global pooling layer; the rank comes from what made its input (an Embedding, a recurrent
    layer), so the pooling is read, not kept opaque.
    """
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((4,), dtype="int32"),
        L.Embedding(VOCAB, 4),
        L.GRU(3, return_sequences=True),
        L.GlobalMaxPooling1D(keepdims=keepdims),
        L.Dense(2, bias_initializer="random_normal"),
    ])
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 4)).astype("int32")
    reference = np.asarray(model(tokens))
    archive = weightio.read(model)
    assert not [layer.name for layer in archive.spec.layers if layer.kind == "opaque"]
    assert_close(reference, weightio.run(archive, tokens))
    with torch.no_grad():
        assert_close(reference, weightio.to_torch(archive)(torch.from_numpy(tokens)).numpy())
    assert_close(reference, np.asarray(weightio.to_keras(archive)(tokens)))


def test_round_trips_do_not_pile_up_layers() -> None:
    """The reader's layout move is the identity in Keras: written as ``Permute((1, 2))`` it
    reads back as that same move, so repeated Keras -> weightio -> Keras trips stay one layer
    longer than the source at most (they used to add an ``Identity`` each time).
    """
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6,), dtype="int32"), L.Embedding(VOCAB, 4), L.Conv1D(3, 2),
        L.GlobalMaxPooling1D(),
    ])
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 6)).astype("int32")
    reference = np.asarray(model(tokens))
    current = model
    for _ in range(3):
        current = weightio.to_keras(weightio.read(current))
        assert len(current.layers) <= len(model.layers) + 1
        assert_close(reference, np.asarray(current(tokens)))
