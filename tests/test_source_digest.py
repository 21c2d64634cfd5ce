"""Converting to an archive: source hashed during the copy, kernel copy, writeback; same bytes.

``convert`` defers the source file's sha256 to a worker thread and ``save`` records it in the
header written last; these tests check that nothing a user can see changed: the recorded digest is
the file's sha256 (in the returned archive and in the written file, single and sharded), ``read``
still hashes at once, the tensors are bit-exact, a failure to hash leaves no output file, and the
writeback hint and the in-kernel copy from a mapped source leave the written bytes exactly as
without them.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio import streaming
from weightio.archive import sha256_of
from weightio.errors import MalformedFileError
from weightio.source_digest import PendingDigest


def _checkpoint(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(3)
    state = {
        "embed.weight": torch.randn(300, 64, generator=g),
        "fc.weight": torch.randn(128, 64, generator=g),
        "fc.bias": torch.randn(128, generator=g),
        "half.weight": torch.randn(40, 8, generator=g).half(),
        "steps": torch.arange(5),
    }
    path = tmp_path / "model.pt"
    torch.save(state, path)
    return path, {k: v.numpy() for k, v in state.items()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_tensors(archive: weightio.Archive, state: dict[str, np.ndarray]) -> None:
    assert sorted(archive.tensors) == sorted(state)
    for name, expected in state.items():
        got = np.asarray(archive.tensors[name])
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes(), name


def test_convert_records_the_source_files_sha256(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    out = tmp_path / "model.safetensors"
    result = weightio.convert(path, out)
    expected = _sha(path)
    assert result.archive.spec.provenance.source_sha256 == expected
    loaded = weightio.load(out, verify=True)
    assert loaded.spec.provenance.source_sha256 == expected
    assert loaded.spec.provenance.source_file == "model.pt"
    _assert_same_tensors(loaded, state)
    # the archive from convert equals the one weightio.read builds, digest included
    read_back = weightio.read(path)
    assert read_back.spec.provenance.source_sha256 == expected
    for key in read_back.tensors:
        assert sha256_of(read_back.tensors[key]) == sha256_of(loaded.tensors[key])


def test_sharded_convert_records_the_source_files_sha256(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    result = weightio.convert(path, tmp_path / "model.safetensors", max_shard_size="40KB")
    index = result.destination
    assert index.name.endswith(".index.json")
    loaded = weightio.load(index, verify=True)
    assert loaded.spec.provenance.source_sha256 == _sha(path)
    _assert_same_tensors(loaded, state)


def test_a_source_that_cannot_be_hashed_leaves_no_output(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path)
    archive = weightio.read(path)
    before = archive.spec
    out = tmp_path / "out.safetensors"
    missing = PendingDigest(tmp_path / "gone.pt")
    with pytest.raises(MalformedFileError, match="gone.pt"):
        weightio.save(archive, out, source_sha256=missing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert archive.spec == before  # no placeholder digest leaks into the caller's archive


def test_pending_digest_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(1).bytes(3 * 1024 * 1024 + 17))
    assert PendingDigest(path).result() == _sha(path)


def test_writeback_hint_keeps_bytes_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    tensors = [(f"t{i}", rng.standard_normal(1000 + 37 * i).astype("f4")) for i in range(20)]
    expected = b"".join(a.tobytes() for _, a in tensors)
    monkeypatch.setattr(streaming, "_WRITEBACK_BYTES", 4096)  # kick after nearly every tensor
    with open(tmp_path / "raw.bin", "wb") as handle:
        digests = streaming.write_hashed(handle, tensors)
    assert (tmp_path / "raw.bin").read_bytes() == expected
    assert digests == {name: hashlib.sha256(a.tobytes()).hexdigest() for name, a in tensors}
    memory = io.BytesIO()  # no file descriptor: the hint is skipped
    assert streaming.write_hashed(memory, tensors) == digests
    assert memory.getvalue() == expected


def test_kernel_copy_from_a_registered_mapping_is_bit_exact(tmp_path: Path) -> None:
    """Tensors lying in a registered file map are copied file to file; others from memory."""
    import mmap

    rng = np.random.default_rng(4)
    blob = rng.standard_normal(50_000).astype("<f4")
    source = tmp_path / "source.bin"
    source.write_bytes(b"\x07" * 13 + blob.tobytes())  # tensors at odd, unaligned offsets
    with open(source, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        streaming.register_file_mapping(mapping, handle.fileno())
    # the handle is closed: the registry holds its own descriptor of the same file
    whole = np.frombuffer(mapping, dtype="<f4", count=50_000, offset=13)
    tensors = [
        ("inside", whole[:1000]),
        ("offset", whole[777 : 777 + 7 * 2000].reshape(-1, 7)),
        ("strided", whole[:30_000].reshape(100, 300).T),  # copied by tensor_bytes: from memory
        ("swapped", whole[:64].astype(">f4")),  # stored little-endian: from memory
        ("empty", whole[:0]),
    ]
    spans: list[tuple[int, int] | None] = []
    real = streaming._copy_file_range

    def spy(handle, where, count):  # type: ignore[no-untyped-def]
        spans.append(where)
        return real(handle, where, count)

    try:
        streaming._copy_file_range = spy  # type: ignore[assignment]
        with open(tmp_path / "out.bin", "wb") as out:
            digests = streaming.write_hashed(out, tensors)
    finally:
        streaming._copy_file_range = real  # type: ignore[assignment]
    expected = b"".join(np.ascontiguousarray(a).astype("<f4").tobytes() for _, a in tensors)
    assert (tmp_path / "out.bin").read_bytes() == expected
    assert digests == {
        name: hashlib.sha256(np.ascontiguousarray(a).astype("<f4").tobytes()).hexdigest()
        for name, a in tensors
    }
    assert len(spans) == 2  # only the two tensors that lie in the map went through the kernel
    del whole, tensors
