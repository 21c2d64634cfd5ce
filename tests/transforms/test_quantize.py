"""``weightio.quantize`` / ``weightio quantize``: int8 (symmetric, asymmetric; per channel, per
tensor) and float8 weights stored as encoded parameters (format 1.2): integers + scale + zero
point in the file, digests for each, decoded by the documented rule by the runtime and both
writers, so the converted models compute what the measurement reports."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest

import weightio
from tests.conftest import assert_close
from weightio.errors import IntegrityError, InvalidInputError
from weightio.runtime.probes import probe_inputs
from weightio.spec import FORMAT_VERSION

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 10),
    ).eval()
    return weightio.read(model, example_input=torch.zeros(1, 1, 8, 8))


def _header(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _raw(path, key, dtype):
    header, data = _header(path)
    begin, end = header[key]["data_offsets"]
    return np.frombuffer(data[begin:end], dtype=dtype).reshape(header[key]["shape"])


def test_int8_per_channel_symmetric_stores_integers_and_decodes_by_the_documented_rule(
    cnn, tmp_path
) -> None:
    result = weightio.quantize(cnn, "int8")
    path = tmp_path / "q.safetensors"
    weightio.save(result.archive, path)
    header, _ = _header(path)
    assert header["3.weight"]["dtype"] == "I8" and header["3.weight.scale"]["shape"] == [10]
    assert "3.weight.zero_point" not in header and header["3.bias"]["dtype"] == "F32"
    assert header["__metadata__"]["weightio.format_version"] == FORMAT_VERSION
    q, scale = _raw(path, "3.weight", np.int8), _raw(path, "3.weight.scale", "<f4")
    decoded = (q.astype(np.float32) * scale.reshape(10, 1)).astype(np.float32)  # docs/format.md
    loaded = weightio.load(path, verify=True)
    assert np.asarray(loaded.tensors["3.weight"]).tobytes() == decoded.tobytes()
    original = np.asarray(cnn.tensors["3.weight"])
    assert np.all(np.abs(decoded - original) <= scale.reshape(10, 1) / 2 + 1e-7)
    assert np.abs(q).max() == 127
    assert result.size_after < result.size_before / 3.5
    assert result.measurement.worst_rel < 0.02 and result.measurement.top1_agreement >= 0.875
    spec = loaded.spec.layer("3").weight
    assert spec.dtype == "F32" and spec.encoding.stored_dtype == "I8" and spec.encoding.scale.digest
    assert any(
        line.startswith("quantize: int8 symmetric per output channel: 2 weight tensor(s)")
        for line in loaded.spec.provenance.transforms
    )


def test_asymmetric_per_tensor_and_float8(cnn, tmp_path) -> None:
    asym = weightio.quantize(cnn, symmetric=False, per_channel=False).archive
    weightio.save(asym, tmp_path / "a.safetensors")
    q = _raw(tmp_path / "a.safetensors", "0.weight", np.int8)
    zero = _raw(tmp_path / "a.safetensors", "0.weight.zero_point", np.int8)
    scale = _raw(tmp_path / "a.safetensors", "0.weight.scale", "<f4")
    assert zero.shape == () and scale.shape == () and q.min() == -128
    decoded = ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)
    assert (
        np.asarray(weightio.load(tmp_path / "a.safetensors").tensors["0.weight"]).tobytes()
        == decoded.tobytes()
    )
    for name, stored, dtype in (
        ("float8_e4m3", "F8_E4M3", ml_dtypes.float8_e4m3fn),
        ("float8_e5m2", "F8_E5M2", ml_dtypes.float8_e5m2),
    ):
        result = weightio.quantize(cnn, name)
        weightio.save(result.archive, tmp_path / f"{name}.safetensors")
        header, _ = _header(tmp_path / f"{name}.safetensors")
        assert header["0.weight"]["dtype"] == stored and "0.weight.zero_point" not in header
        q = _raw(tmp_path / f"{name}.safetensors", "0.weight", dtype)
        s = _raw(tmp_path / f"{name}.safetensors", "0.weight.scale", "<f4")
        want = (q.astype(np.float32) * s.reshape(8, 1, 1, 1)).astype(np.float32)
        assert np.asarray(result.archive.tensors["0.weight"]).tobytes() == want.tobytes()
    with pytest.raises(InvalidInputError, match="symmetric only"):
        weightio.quantize(cnn, "float8_e4m3", symmetric=False)
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        weightio.quantize(cnn, "int4")


def test_quantised_archive_converts_and_runs_with_the_reported_outputs(cnn, tmp_path) -> None:
    keras = pytest.importorskip("keras")
    result = weightio.quantize(cnn, "int8")
    weightio.save(result.archive, tmp_path / "q.safetensors")
    loaded = weightio.load(tmp_path / "q.safetensors")
    x = probe_inputs(cnn.spec)[0]
    expected = weightio.run(loaded, x)
    worst = np.abs(expected.astype("f8") - weightio.run(cnn, x)).max()
    assert worst == pytest.approx(result.measurement.worst_abs, rel=1e-3)
    module = weightio.to_torch(loaded)
    with torch.no_grad():
        assert_close(expected, module(torch.from_numpy(x)).numpy())
        assert torch.equal(module[3].weight, torch.tensor(np.asarray(loaded.tensors["3.weight"])))
    model = weightio.to_keras(loaded)
    assert isinstance(model, keras.Model)
    assert_close(expected, np.asarray(model(x.transpose(0, 2, 3, 1))))
    weightio.convert(tmp_path / "q.safetensors", tmp_path / "q.pt2")  # verified against the runtime


def test_scale_bytes_are_covered_by_the_digests(cnn, tmp_path) -> None:
    path = tmp_path / "q.safetensors"
    weightio.save(weightio.quantize(cnn).archive, path)
    header, _ = _header(path)
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    begin, _end = header["3.weight.scale"]["data_offsets"]
    raw = bytearray(path.read_bytes())
    raw[8 + n + begin] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"3\.weight\.scale"):
        weightio.load(path, verify=True)


def test_cli_quantize_says_the_sizes(cnn, tmp_path, cli) -> None:
    weightio.save(cnn, tmp_path / "m.safetensors")
    out = tmp_path / "q.safetensors"
    done = cli("quantize", str(tmp_path / "m.safetensors"), str(out), "--asymmetric", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["size_after"] < report["size_before"] and len(report["layers"]) == 2
    assert report["measurement"]["compared"] and out.exists()


def test_inspect_shows_the_stored_bytes_and_later_transforms_say_they_decoded(cnn) -> None:
    from weightio.analysis.inspect import inspect_archive

    quantised = weightio.quantize(cnn).archive
    report = inspect_archive(quantised)
    weight = report.layers[3].tensors[0]
    assert weight.dtype == "I8" and weight.nbytes == 2880 + 4 * 10
    assert report.bytes_by_dtype == {"I8": 72 + 2880, "F32": 4 * (8 + 10 + 8 + 10)}
    folded = weightio.fold(quantised)
    assert any("quantised weights were decoded first" in note for note in folded.notes)
    assert folded.size_before < folded.size_after and not folded.archive.spec.encoded
