"""NaN/Inf in source weights (battery item 39, second half): archived bit-exact, named by
``inspect``, and ``convert`` either verifies (NaN in the same places everywhere) or says the
weights hold non-finite values. Real torch and Keras models; plus a Keras model cast to float16."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import weightio
from weightio.errors import VerificationError
from weightio.verbs.proof import DEFAULT_TOLERANCES, compare

torch = pytest.importorskip("torch")

NAN_PAYLOAD = 0x7FC01234  # a quiet NaN with a payload: "bit-exact" includes it


def _poison(weight: np.ndarray) -> np.ndarray:
    w = np.array(weight, dtype=np.float32)
    bits = w.view(np.uint32)
    bits[0, 0] = NAN_PAYLOAD
    w[0, 1], w[0, 2] = np.inf, -np.inf
    return w


@pytest.fixture()
def torch_nan():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(_poison(model[0].weight.numpy())))
    return model


def test_torch_nan_inf_weights_are_archived_bit_exact_and_named(torch_nan, tmp_path) -> None:
    source_bits = torch_nan[0].weight.detach().numpy().view(np.uint32).copy()
    archive = weightio.read(torch_nan)  # reading never fails on NaN weights
    path = tmp_path / "nan.safetensors"
    weightio.save(archive, path)
    loaded = weightio.load(path, verify=True)
    assert np.array_equal(np.asarray(loaded.tensors["0.weight"]).view(np.uint32), source_bits)
    assert hex(int(np.asarray(loaded.tensors["0.weight"]).view(np.uint32)[0, 0])) == hex(NAN_PAYLOAD)
    report = json.loads(_cli("inspect", str(path), "--json").stdout)
    assert report["nonfinite"] == [{"key": "0.weight", "nan": 1, "inf": 2}]
    for extra in ([], ["--stats"]):
        text = _cli("inspect", str(path), *extra).stdout
        assert "non-finite values: 1 NaN, 2 Inf, kept bit-exact, in 0.weight (1 NaN, 2 Inf)" in text
    # and a .pt file of the same weights goes through the data-only reader bit-exact too
    torch.save(torch_nan.state_dict(), tmp_path / "nan.pt")
    from_file = weightio.read(tmp_path / "nan.pt")
    assert np.array_equal(np.asarray(from_file.tensors["0.weight"]).view(np.uint32), source_bits)


def test_convert_with_all_nan_outputs_fails_naming_the_weights(torch_nan, tmp_path) -> None:
    with pytest.raises(VerificationError) as info:
        weightio.convert(torch_nan, tmp_path / "m.pt2")
    message = str(info.value)
    assert "weights hold non-finite values (0.weight (1 NaN, 1 +inf, 1 -inf))" in message
    assert "--no-verify" in message
    assert list(tmp_path.iterdir()) == []
    result = weightio.convert(torch_nan, tmp_path / "m.safetensors", verify=False)
    written = weightio.load(result.destination)
    assert np.isnan(np.asarray(written.tensors["0.weight"])[0, 0])


def test_convert_verifies_when_nan_reaches_only_some_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight[2, 0] = float("nan")  # only output column 2 is NaN
    result = weightio.convert(model, tmp_path / "m.pt2")
    assert result.verification is not None and result.verification.passed
    assert [n.key for n in result.nonfinite] == ["0.weight"]
    assert any("non-finite values, copied bit-exactly: 0.weight (1 NaN)" in line for line in result.summary())
    back = torch.export.load(result.destination).module()
    x = torch.randn(5, 4)
    out = back(x)
    assert torch.isnan(out[:, 2]).all() and torch.isfinite(out[:, :2]).all()


def test_compare_treats_nan_in_the_same_places_as_agreement() -> None:
    ref = np.array([[1.0, np.nan], [2.0, np.inf]])
    assert compare("y", ("a", "b"), ref, ref.copy(), atol=1e-5, rtol=1e-4).passed
    moved = np.array([[np.nan, 1.0], [2.0, np.inf]])
    assert not compare("y", ("a", "b"), ref, moved, atol=1e-5, rtol=1e-4).passed
    all_nan = np.full((2, 2), np.nan)
    assert not compare("y", ("a", "b"), all_nan, all_nan, atol=1e-5, rtol=1e-4).passed  # proves nothing


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


# -- Keras: one module-scoped model for the NaN and the float16 checks ---------------------------

@pytest.fixture(scope="module")
def keras_model():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(6, activation="tanh"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    return model


def test_keras_model_cast_to_float16_within_float16_tolerance(keras_model, tmp_path) -> None:
    x = np.random.default_rng(2).standard_normal((8, 8, 8, 2)).astype("f4")
    ref = np.asarray(keras_model.predict(x, verbose=0))
    path = tmp_path / "k.keras"
    keras_model.save(path)
    result = weightio.cast(path, "float16")  # read framework-free, then cast
    assert {t.dtype for t in result.cast} == {"F16"} and str(result).startswith("cast 6 tensor(s)")
    got = weightio.run(result.archive, x.transpose(0, 3, 1, 2))  # canonical: channels first
    atol, rtol = DEFAULT_TOLERANCES["float16"]
    check = compare("y", ("keras f32", "numpy f16"), ref, got, atol=atol, rtol=rtol)
    assert check.passed, check
    assert check.worst_abs > 0  # the cast did change numbers: the tolerance is what is tested


def test_keras_nan_weights_are_archived_bit_exact(keras_model, tmp_path) -> None:
    import keras

    clone = keras.models.clone_model(keras_model)
    weights = [np.array(w) for w in keras_model.get_weights()]
    kernel = weights[2]  # the first Dense kernel, [in, out]
    kernel.view(np.uint32)[0, 0] = NAN_PAYLOAD
    kernel[1, 0] = -np.inf
    clone.set_weights(weights)
    expected = kernel.T.view(np.uint32).copy()  # canonical [out, in]
    for archive in (weightio.read(clone), _via_file(clone, tmp_path)):
        dense = next(layer for layer in archive.spec.layers if layer.kind == "dense")
        stored = np.asarray(archive.tensors[dense.weight.key])
        assert np.array_equal(stored.view(np.uint32), expected)
    weightio.save(archive, tmp_path / "k.safetensors")
    report = json.loads(_cli("inspect", str(tmp_path / "k.safetensors"), "--json").stdout)
    assert report["nonfinite"] == [{"key": dense.weight.key, "nan": 1, "inf": 1}]


def _via_file(model, tmp_path):
    path = tmp_path / "nan.keras"
    model.save(path)
    return weightio.read(path)


def test_large_finite_float64_values_are_not_counted_as_inf():
    """1e300 is finite in float64; the scan must not widen/narrow it through float32."""
    from weightio.analysis.nonfinite import count_nonfinite

    values = np.array([1e300, -1e300, np.nan, np.inf, 1.0], dtype=np.float64)
    assert count_nonfinite(values) == (1, 1, 0)
    import ml_dtypes

    assert count_nonfinite(np.array([np.inf, 1.0, np.nan], dtype=ml_dtypes.bfloat16)) == (1, 1, 0)
