"""``to_torch(archive, keep_int8=True)`` / ``weightio convert --keep-int8``: int8-quantised conv
and dense weights stay int8 in the torch module (``QuantizedConv``/``QuantizedLinear`` buffers,
decoded in ``forward`` by the rule of docs/format.md), computing what the dequantising writer
and the numpy runtime compute, in a state dict about 4x smaller; read back live, the module
gives the quantised archive again."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import weightio
from tests.conftest import assert_close
from weightio.errors import UnsupportedSourceError
from weightio.runtime.probes import probe_inputs

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cnn():
    """The shape of docs/transforms.md's digits CNN (conv + batch norm twice, max pool, dense,
    dropout, dense) on 8x8 inputs, untrained: quantisation does not care."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
        torch.nn.Dropout(0.2), torch.nn.Linear(64, 10),
    ).eval()
    with torch.no_grad():  # batch norms with statistics of their own
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return weightio.read(model, example_input=torch.zeros(1, 1, 8, 8))


def _state_bytes(module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return len(buffer.getvalue())


def _outputs(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
def test_keep_int8_module_holds_integers_and_computes_the_dequantised_outputs(cnn, symmetric) -> None:
    quantized = weightio.quantize(cnn, "int8", symmetric=symmetric).archive
    kept = weightio.to_torch(quantized, keep_int8=True)
    plain = weightio.to_torch(quantized)
    names = [type(m).__name__ for m in kept]
    assert names.count("QuantizedConv") == 2 and names.count("QuantizedLinear") == 2
    state = kept.state_dict()
    assert state["0.weight_int8"].dtype == torch.int8 and "0.weight" not in state
    assert tuple(state["0.scale"].shape) == (16,) and state["0.scale"].dtype == torch.float32
    assert ("0.zero_point" in state) is (not symmetric)
    # the decoded weight is the dequantising writer's, bit for bit
    assert torch.equal(kept[0].dequantized_weight(), plain[0].weight.detach())
    assert torch.equal(kept[11].dequantized_weight(), plain[11].weight.detach())
    x = probe_inputs(quantized.spec, seed=3, samples=16)[0]
    out_kept, out_plain = _outputs(kept, x), _outputs(plain, x)
    assert np.array_equal(out_kept, out_plain)
    assert_close(out_kept, weightio.run(quantized, x))
    small, large = _state_bytes(kept), _state_bytes(plain)
    assert small < large / 2.5, (small, large)  # weights 4x smaller; biases and norms stay float


def test_keep_int8_module_reads_back_as_the_quantised_archive(cnn) -> None:
    quantized = weightio.quantize(cnn, "int8", symmetric=False).archive
    kept = weightio.to_torch(quantized, keep_int8=True)
    back = weightio.read(kept, example_input=torch.zeros(1, 1, 8, 8))
    assert back.spec.encoded
    assert sorted(back.stored) == sorted(quantized.stored)
    for key in quantized.stored:
        assert np.array_equal(np.asarray(back.stored[key]), np.asarray(quantized.stored[key])), key
    weight = back.spec.layer("0").weight
    assert weight.dtype == "F32" and weight.encoding.stored_dtype == "I8" and weight.encoding.axis == 0
    x = probe_inputs(quantized.spec, seed=1, samples=8)[0]
    assert np.array_equal(weightio.run(back, x), weightio.run(quantized, x))


def test_convert_keep_int8_writes_smaller_files_verified_that_read_back_quantised(
    cnn, tmp_path, cli
) -> None:
    quantized = weightio.quantize(cnn, "int8").archive
    source = tmp_path / "q.safetensors"
    weightio.save(quantized, source)
    sizes = {}
    for name, flags in (("kept", ["--keep-int8"]), ("plain", [])):
        for suffix in (".pt", ".pt2"):
            done = cli("convert", source, tmp_path / f"{name}{suffix}", *flags)
            assert done.returncode == 0, done.stderr
            assert "ok" in done.stdout  # verified against the numpy runtime before writing
            sizes[name + suffix] = (tmp_path / f"{name}{suffix}").stat().st_size
    assert sizes["kept.pt"] < sizes["plain.pt"] / 2.5, sizes
    assert sizes["kept.pt2"] < sizes["plain.pt2"], sizes
    state = torch.load(tmp_path / "kept.pt", weights_only=True)
    assert state["0.weight_int8"].dtype == torch.int8
    program = torch.export.load(tmp_path / "kept.pt2").module()
    x = probe_inputs(quantized.spec, seed=0, samples=8)[0]
    assert_close(_outputs(program, x), weightio.run(quantized, x))
    back = weightio.read(tmp_path / "kept.pt2")  # the program reads as the quantised archive
    assert sorted(back.stored) == sorted(quantized.stored)
    for key in quantized.stored:
        assert np.array_equal(np.asarray(back.stored[key]), np.asarray(quantized.stored[key])), key
    with pytest.raises(UnsupportedSourceError, match="keep_int8"):
        weightio.convert(source, tmp_path / "kept.keras", keep_int8=True)


def test_keep_int8_dequantises_float8_and_names_the_layers(cnn) -> None:
    quantized = weightio.quantize(cnn, "float8_e4m3", include=["0", "11"]).archive
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = weightio.to_torch(quantized, keep_int8=True)
    messages = [str(w.message) for w in caught if "keep_int8" in str(w.message)]
    assert len(messages) == 1 and "0, 11" in messages[0]
    assert isinstance(module[0], torch.nn.Conv2d)
    x = probe_inputs(quantized.spec, seed=0, samples=4)[0]
    assert_close(_outputs(module, x), weightio.run(quantized, x))


def test_keep_int8_of_a_keras_model_permutes_the_int8_columns_behind_its_flatten() -> None:
    """A Keras flatten is channels-last: the torch writer permutes the next dense's columns
    (``layouts.flow.refold_flatten``); kept int8, the integers are permuted, not decoded."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(5),
    ])
    quantized = weightio.quantize(weightio.read(model), "int8").archive
    kept = weightio.to_torch(quantized, keep_int8=True)
    assert [type(m).__name__ for m in kept].count("QuantizedLinear") == 1
    x = probe_inputs(quantized.spec, seed=0, samples=8)[0]
    assert x.shape == (8, 2, 6, 6)  # canonical: channels first, as torch reads them
    assert_close(_outputs(kept, x), weightio.run(quantized, x))
    assert np.array_equal(_outputs(kept, x), _outputs(weightio.to_torch(quantized), x))
