"""Archives written before BLAKE3 (format 1.0, plain sha256 digests) still load and verify.

``tests/golden/dense-sha256-v1.0.safetensors`` is written by ``scripts/make_golden_sha256_archive.py``
with ``json``/``struct``/``hashlib`` only, as weightio 1.0 laid it out.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.errors import IntegrityError, SpecValidationError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "dense-sha256-v1.0.safetensors"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("golden", ROOT / "scripts" / "make_golden_sha256_archive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_committed_file_is_what_the_script_writes() -> None:
    assert GOLDEN.read_bytes() == _script().golden_bytes()


def test_a_format_1_0_sha256_archive_loads_verifies_and_runs() -> None:
    archive = weightio.verify(GOLDEN)
    assert archive.spec.format_version == "1.0"
    assert archive.digest_algorithms() == ["sha256"]
    weight = archive.tensors["fc.weight"]
    ref = archive.spec.layer("fc").tensor_refs()["weight"]
    assert ref.digest is None and ref.sha256 == hashlib.sha256(weight.tobytes()).hexdigest()
    assert ref.recorded_digest() == "sha256:" + ref.sha256
    assert archive.spec.provenance.recorded_source_digest().startswith("sha256:")
    x = np.ones((2, 4), np.float32)
    expected = x @ weight.T + archive.tensors["fc.bias"]
    np.testing.assert_array_equal(weightio.run(archive, x), expected)


def test_a_changed_byte_of_a_sha256_archive_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "golden.safetensors"
    raw = bytearray(GOLDEN.read_bytes())
    raw[-1] ^= 0x01  # the last byte of fc.bias
    copy.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256") as caught:
        weightio.verify(copy)
    assert caught.value.tensor == "fc.bias"


def test_saving_a_sha256_archive_again_records_the_chosen_digest(tmp_path: Path) -> None:
    archive = weightio.load(GOLDEN)
    weightio.save(archive, tmp_path / "b3.safetensors")
    again = weightio.verify(tmp_path / "b3.safetensors")
    assert again.spec.format_version == weightio.spec.FORMAT_VERSION
    assert again.digest_algorithms() == ["blake3"]
    assert again.spec.provenance.recorded_source_digest() == archive.spec.provenance.recorded_source_digest()
    weightio.save(weightio.load(GOLDEN), tmp_path / "sha.safetensors", digest="sha256")
    sha = weightio.verify(tmp_path / "sha.safetensors")
    ref = sha.spec.layer("fc").tensor_refs()["weight"]
    assert ref.digest == "sha256:" + hashlib.sha256(sha.tensors["fc.weight"].tobytes()).hexdigest()


def test_both_digest_fields_at_once_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "both.safetensors"
    shutil.copy(GOLDEN, copy)
    archive = weightio.load(copy)
    data = archive.spec.model_dump()
    data["layers"][0]["weight"]["digest"] = "sha256:" + data["layers"][0]["weight"]["sha256"]
    with pytest.raises(SpecValidationError, match="one digest"):
        weightio.spec.spec_from_data(data)
