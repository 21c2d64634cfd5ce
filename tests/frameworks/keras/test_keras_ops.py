"""Keras 3 operation layers (``keras.ops`` calls in a Functional model) read, run, go to
PyTorch and back to Keras with the same numbers (issue 14).

Each operation is applied to a feature map (Keras channels-last, canonical channels-first) and,
where it makes sense, to plain data, so a constant or an axis left in Keras's layout shows.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close, keras_view  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

ops = keras.ops
L = keras.layers


def _model() -> tuple[object, list[str]]:
    """One Functional model whose outputs are each operation's result."""
    keras.utils.set_random_seed(0)
    image, vector = keras.Input((4, 4, 3)), keras.Input((6,))
    fmap = L.Conv2D(3, 1, bias_initializer="random_normal")(image)
    outs = {
        "add_scalar": ops.add(fmap, 3.0),
        "multiply_scalar": ops.multiply(fmap, 0.5),
        "divide_scalar": ops.divide(fmap, 6.0),
        "subtract_from_constant": ops.subtract(2.0, fmap),
        "add_channel_vector": ops.add(fmap, ops.convert_to_tensor([1.0, -2.0, 3.0])),
        "multiply_vector": ops.multiply(ops.convert_to_tensor(np.arange(6, dtype="f4")), vector),
        "hard_swish_by_hand": ops.divide(ops.multiply(fmap, ops.relu6(ops.add(fmap, 3.0))), 6.0),
        "relu6": ops.relu6(fmap),
        "hard_sigmoid": ops.hard_sigmoid(fmap),
        "hard_silu": ops.hard_silu(fmap),
        "mean_spatial_keepdims": ops.mean(fmap, axis=[1, 2], keepdims=True),
        "max_channels": ops.max(fmap, axis=-1),
        "sum_vector": ops.sum(vector, axis=1, keepdims=True),
        "reshape": ops.reshape(fmap, (-1, 16, 3)),
        "transpose": ops.transpose(ops.reshape(fmap, (-1, 16, 3)), (0, 2, 1)),
        "concatenate_channels": ops.concatenate([fmap, image], axis=-1),
        "squeeze": ops.squeeze(ops.mean(fmap, axis=[1, 2], keepdims=True), axis=1),
        "expand_dims": ops.expand_dims(vector, 1),
        "broadcast_multiply": ops.multiply(fmap, ops.mean(fmap, axis=[1, 2], keepdims=True)),
        "add_tensors": ops.add(vector, vector),
    }
    model = keras.Model([image, vector], list(outs.values()))
    return model, list(outs)


@pytest.fixture(scope="module")
def converted() -> dict[str, object]:
    model, names = _model()
    archive = weightio.read(model)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 4, 4, 3)).astype("f4"), rng.standard_normal((2, 6)).astype("f4")]
    module = weightio.to_torch(archive)

    def torch_run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in module(*[torch.from_numpy(x) for x in inputs])]

    return {
        "names": names,
        "archive": archive,
        "keras": [np.asarray(y) for y in model(xs)],
        "numpy": keras_view(archive.spec, lambda inputs: weightio.run(archive, inputs))(xs),
        "torch": keras_view(archive.spec, torch_run)(xs),
        "back": [np.asarray(y) for y in weightio.to_keras(archive)(xs)],
    }


def test_every_operation_is_read(converted: dict[str, object]) -> None:
    spec = converted["archive"].spec  # type: ignore[attr-defined]
    assert not [(l.name, l.reason) for l in spec.layers if l.kind == "opaque"]
    kinds = {l.kind for l in spec.layers}
    assert {"arithmetic", "activation", "reduce", "reshape", "permute", "concatenate", "multiply"} <= kinds


@pytest.mark.parametrize("index", range(20))
def test_operation_matches_everywhere(converted: dict[str, object], index: int) -> None:
    names = converted["names"]
    reference = converted["keras"][index]  # type: ignore[index]
    for witness in ("numpy", "torch", "back"):
        try:
            assert_close(reference, converted[witness][index])  # type: ignore[index]
        except AssertionError as exc:
            raise AssertionError(f"{names[index]} ({witness}): {exc}") from None  # type: ignore[index]


def test_division_of_two_tensors_is_refused_by_name() -> None:
    a, b = keras.Input((3,)), keras.Input((3,))
    divide = ops.divide(a, b)
    archive = weightio.read(keras.Model([a, b], divide))
    layer = archive.spec.layers[-1]
    assert layer.kind == "opaque" and "merge kind" in (layer.reason or "")
    with pytest.raises(UnsupportedLayerError) as info:
        weightio.to_torch(archive)
    assert info.value.layer == layer.name


def test_split_reads_as_one_slice_per_output() -> None:
    """``ops.split`` of a feature map's channels (and of a sequence's steps, at given indices):
    each output is a ``slice`` of its own, read by a conv, a merge, or returned.
    """
    keras.utils.set_random_seed(2)
    image, sequence = keras.Input((4, 4, 3)), keras.Input((5, 6))
    fmap = L.Conv2D(4, 1, bias_initializer="random_normal")(image)
    left, right = ops.split(fmap, 2, axis=-1)
    joined = ops.add(L.Conv2D(2, 1)(left), right)
    first, middle, last = ops.split(sequence, [1, 3], axis=1)
    model = keras.Model([image, sequence], [joined, ops.multiply(middle, 2.0), last, first])
    archive = weightio.read(model)
    assert [l.kind for l in archive.spec.layers].count("slice") == 5
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 4, 4, 3)).astype("f4"), rng.standard_normal((2, 5, 6)).astype("f4")]
    reference = [np.asarray(y) for y in model(xs)]
    module = weightio.to_torch(archive)

    def torch_run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in module(*[torch.from_numpy(x) for x in inputs])]

    for witness in (
        keras_view(archive.spec, lambda inputs: weightio.run(archive, inputs))(xs),
        keras_view(archive.spec, torch_run)(xs),
        [np.asarray(y) for y in weightio.to_keras(archive)(xs)],
    ):
        for want, got in zip(reference, witness):
            assert_close(want, got)


def test_split_along_a_free_length_is_refused_by_name() -> None:
    x = keras.Input((None, 4))
    a, b = ops.split(x, [1], axis=1)
    with pytest.raises(UnsupportedLayerError, match="free dimension") as info:
        weightio.read(keras.Model(x, [a, b]))
    assert info.value.layer is not None and info.value.layer.startswith("split")
