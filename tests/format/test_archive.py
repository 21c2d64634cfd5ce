"""The archive file: bit-exact round trips, lazy reads, integrity, atomic writes, interop."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightio
from weightio.errors import IntegrityError, MalformedFileError, SpecValidationError, WriteError
from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import load, save
from weightio.spec import FORMAT_VERSION
from weightio.spec.core import DenseLayer, OpaqueLayer
from weightio.spec.dtypes import ALL_DTYPE_NAMES, numpy_dtype
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance

PROVENANCE = Provenance(source_framework="weightio", weightio_version="test", created_at="now")


def opaque_archive(arrays: dict[str, np.ndarray]) -> Archive:
    """Every tensor in one opaque layer: the archive as pure tensor storage."""
    layer = OpaqueLayer(
        name="blob",
        tensors={name: tensor_ref(f"blob.{name}", a) for name, a in arrays.items()},
    )
    spec = ModelSpec(name="blob", provenance=PROVENANCE, weights_only=True, layers=[layer])
    return Archive(spec, {f"blob.{name}": a for name, a in arrays.items()})


def dense_archive(rng: np.random.Generator, dtype: str = "f4") -> Archive:
    w = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    layer = DenseLayer(
        name="fc", units=3, in_features=4,
        weight=tensor_ref("fc.weight", w), bias=tensor_ref("fc.bias", b),
    )
    spec = ModelSpec(
        name="tiny", provenance=PROVENANCE, inputs=[InputSpec(name="x", shape=(4,))],
        layers=[layer], outputs=[OutputSpec(name="y", layer="fc")],
    )
    return Archive(spec, {"fc.weight": w, "fc.bias": b})


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, np.ndarray]:
    count = draw(st.integers(1, 4))
    result = {}
    for i in range(count):
        dtype = numpy_dtype(draw(st.sampled_from(ALL_DTYPE_NAMES)))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = draw(st.binary(min_size=nbytes, max_size=nbytes))
        array = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape) if nbytes else np.zeros(shape, dtype)
        result[f"t{i}"] = array
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=tensors())
def test_every_dtype_round_trips_bit_exact(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path / "a.safetensors"
    save(opaque_archive(arrays), path)
    loaded = load(path, verify=True)
    for name, array in arrays.items():
        got = loaded.tensors[f"blob.{name}"]
        assert got.dtype == array.dtype and got.shape == array.shape
        assert got.tobytes() == array.tobytes()  # bits, so NaN payloads count too


def test_spec_rides_in_header_metadata(tmp_path: Path, rng: np.random.Generator) -> None:
    path = save(dense_archive(rng), tmp_path / "m.safetensors")
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["weightio.format_version"] == FORMAT_VERSION
    spec = json.loads(meta["weightio.spec"])
    assert spec["layers"][0]["weight"]["digest"].startswith("blake3:")
    assert "sha256" not in spec["layers"][0]["weight"]
    assert (8 + n) % 8 == 0  # tensor data starts aligned


def test_plain_safetensors_readers_open_archives(tmp_path: Path, rng: np.random.Generator) -> None:
    from safetensors.numpy import load_file

    archive = dense_archive(rng)
    path = save(archive, tmp_path / "m.safetensors")
    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["fc.weight"], archive.tensors["fc.weight"])


def test_torch_safetensors_reads_bf16_and_f8(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    values = np.array([1.5, -2.25, 3.0, 0.0078125], dtype=np.float32)
    arrays = {
        "bf": values.astype(ml_dtypes.bfloat16),
        "f8": values.astype(ml_dtypes.float8_e4m3fn),
    }
    path = save(opaque_archive(arrays), tmp_path / "m.safetensors")
    loaded = load_file(str(path))
    assert loaded["blob.bf"].dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded["blob.bf"].float().numpy(), values)
    np.testing.assert_array_equal(loaded["blob.f8"].float().numpy(), values)


def test_load_reads_header_only_and_maps_tensors(tmp_path: Path, rng: np.random.Generator) -> None:
    path = save(dense_archive(rng), tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # corrupt the last data byte: load must not notice, verify must
    path.write_bytes(bytes(raw))
    loaded = load(path)
    weight = loaded.tensors["fc.weight"]
    assert not weight.flags.writeable
    with pytest.raises(ValueError):
        weight[0, 0] = 1.0
    with pytest.raises(IntegrityError, match="fc.bias"):
        loaded.verify()
    with pytest.raises(IntegrityError):
        load(path, verify=True)


def test_tensors_mapping_is_read_only(rng: np.random.Generator) -> None:
    archive = dense_archive(rng)
    with pytest.raises(TypeError):
        archive.tensors["fc.weight"] = np.zeros((3, 4), "f4")  # type: ignore[index]


def test_archive_rejects_tensors_that_disagree_with_spec(rng: np.random.Generator) -> None:
    archive = dense_archive(rng)
    arrays = dict(archive.tensors)
    arrays["fc.bias"] = np.zeros(3, "f8")
    with pytest.raises(SpecValidationError, match="dtype F32") as info:
        Archive(archive.spec, arrays)
    assert info.value.layer == "fc"


def test_header_disagreeing_with_spec_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = save(dense_archive(rng), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    spec = json.loads(header["__metadata__"]["weightio.spec"])
    spec["layers"][0]["bias"]["key"] = "fc.other"
    header["__metadata__"]["weightio.spec"] = json.dumps(spec)
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])
    with pytest.raises(SpecValidationError, match="fc.other"):
        load(path)


@pytest.mark.parametrize(
    "payload",
    [b"", b"1234567", struct.pack("<Q", 2**40) + b"{}" * 46, struct.pack("<Q", 2) + b"[]",
     struct.pack("<Q", 4) + b"\xff\xfe{}"],
    ids=["empty", "seven-bytes", "huge-length", "json-array", "not-utf8"],
)
def test_malformed_files_raise_typed_errors(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(MalformedFileError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_plain_state_dict_is_not_an_archive(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": np.ones(3, "f4")}, str(path))
    with pytest.raises(MalformedFileError, match="weightio.read"):
        load(path)
    archive = weightio.read(path)
    assert archive.spec.weights_only and list(archive.tensors) == ["w"]


DISK_FULL_SCRIPT = """
import resource, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_archive import opaque_archive
from weightio.format.store import save
from weightio.errors import WriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    save(opaque_archive({{"big": np.ones(1 << 20, "f4")}}), {target!r})
except WriteError as exc:
    print("WriteError:", exc)
"""


def test_disk_full_leaves_target_and_folder_untouched(tmp_path: Path, rng: np.random.Generator) -> None:
    """A real EFBIG (RLIMIT_FSIZE) mid-write: typed error, old file intact, no temp left."""
    import subprocess
    import sys

    target = tmp_path / "m.safetensors"
    save(dense_archive(rng), target)
    before = target.read_bytes()
    script = DISK_FULL_SCRIPT.format(tests=str(Path(__file__).parent), target=str(target))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "WriteError:" in result.stdout and "larger than this process may write" in result.stdout, result.stderr
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_new_files_get_normal_permissions(tmp_path: Path, rng: np.random.Generator) -> None:
    umask = os.umask(0o022)
    try:
        path = save(dense_archive(rng), tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_target_that_is_a_folder_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(WriteError, match="folder"):
        save(dense_archive(rng), tmp_path)


def test_future_major_version_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = save(dense_archive(rng), tmp_path / "m.safetensors")
    old = f'"weightio.format_version":"{FORMAT_VERSION}"'.encode()
    raw = path.read_bytes().replace(old, b'"weightio.format_version":"9.1"')
    assert raw != path.read_bytes()
    path.write_bytes(raw)
    with pytest.raises(SpecValidationError, match="upgrade weightio"):
        load(path)
