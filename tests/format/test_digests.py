"""Converting to an archive: source hashed during the copy, kernel copy, writeback; same bytes.

``convert`` defers the source file's digest (BLAKE3, or sha256 on request) to a worker thread and
``save`` records it in the header written last; these tests check that nothing a user can see
changed: the recorded digest is the file's (in the returned archive and in the written file,
single and sharded, with either algorithm), ``read``
still hashes at once, the tensors are bit-exact, a failure to hash leaves no output file, and the
writeback hint and the in-kernel copy from a mapped source leave the written bytes exactly as
without them.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import blake3
import numpy as np
import pytest

import weightio
from weightio.errors import MalformedFileError
from weightio.format import streaming
from weightio.format.archive import digest_of, sha256_of
from weightio.format.digests import PendingDigest


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


def _b3(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


def _assert_same_tensors(archive: weightio.Archive, state: dict[str, np.ndarray]) -> None:
    assert sorted(archive.tensors) == sorted(state)
    for name, expected in state.items():
        got = np.asarray(archive.tensors[name])
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes(), name


def test_convert_records_the_source_files_digest(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    out = tmp_path / "model.safetensors"
    result = weightio.convert(path, out)
    expected = _b3(path.read_bytes())
    assert result.archive.spec.provenance.source_digest == expected
    loaded = weightio.load(out, verify=True)
    assert loaded.spec.provenance.source_digest == expected
    assert loaded.spec.provenance.source_sha256 is None
    assert loaded.spec.provenance.source_file == "model.pt"
    _assert_same_tensors(loaded, state)
    for _, _, ref in loaded.spec.tensor_refs():  # BLAKE3 of each tensor's stored bytes
        assert ref.digest == _b3(np.ascontiguousarray(loaded.tensors[ref.key]).tobytes())
        assert ref.sha256 is None
    # the archive from convert equals the one weightio.read builds, digest included
    read_back = weightio.read(path)
    assert read_back.spec.provenance.source_digest == expected
    for key in read_back.tensors:
        assert sha256_of(read_back.tensors[key]) == sha256_of(loaded.tensors[key])


def test_convert_with_sha256_records_sha256_everywhere(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    out = tmp_path / "model.safetensors"
    result = weightio.convert(path, out, digest="sha256")
    assert result.archive.spec.provenance.source_digest == "sha256:" + _sha(path)
    loaded = weightio.load(out, verify=True)
    assert loaded.spec.provenance.source_digest == "sha256:" + _sha(path)
    for _, _, ref in loaded.spec.tensor_refs():
        data = np.ascontiguousarray(loaded.tensors[ref.key]).tobytes()
        assert ref.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert loaded.digest_algorithms() == ["sha256"]
    _assert_same_tensors(loaded, state)


def test_sharded_convert_records_the_source_files_digest(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    result = weightio.convert(path, tmp_path / "model.safetensors", max_shard_size="40KB")
    index = result.destination
    assert index.name.endswith(".index.json")
    loaded = weightio.load(index, verify=True)
    assert loaded.spec.provenance.source_digest == _b3(path.read_bytes())
    _assert_same_tensors(loaded, state)
    sha = weightio.convert(path, tmp_path / "sha.safetensors", max_shard_size="40KB", digest="sha256")
    assert weightio.load(sha.destination, verify=True).digest_algorithms() == ["sha256"]


def test_a_source_that_cannot_be_hashed_leaves_no_output(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path)
    archive = weightio.read(path)
    before = archive.spec
    out = tmp_path / "out.safetensors"
    missing = PendingDigest(tmp_path / "gone.pt")
    with pytest.raises(MalformedFileError, match="gone.pt"):
        weightio.save(archive, out, source_digest=missing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert archive.spec == before  # no placeholder digest leaks into the caller's archive


def test_pending_digest_matches_the_reference_hashers(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(1).bytes(33 * 1024 * 1024 + 17))  # > one read buffer
    assert PendingDigest(path, "sha256").result() == "sha256:" + _sha(path)
    assert PendingDigest(path).result() == _b3(path.read_bytes())


def test_tensor_digests_match_the_reference_hashers() -> None:
    """One thread or all cores, BLAKE3 gives the reference digest; sha256 is hashlib's."""
    rng = np.random.default_rng(5)
    for size in (0, 1, 1023, 1025, 4 * 1024 * 1024 + 3):  # around BLAKE3 chunks; parallel path
        array = rng.integers(0, 255, size=size, dtype=np.uint8)
        assert digest_of(array) == _b3(array.tobytes())
        assert digest_of(array, "sha256") == "sha256:" + hashlib.sha256(array.tobytes()).hexdigest()
    strided = rng.standard_normal((300, 200)).astype(">f4").T  # stored C order, little-endian
    stored = np.ascontiguousarray(strided).astype("<f4").tobytes()
    assert digest_of(strided) == _b3(stored)
    with pytest.raises(weightio.errors.InvalidInputError, match="md5"):
        weightio.save(weightio.read({"w": array}), "/nonexistent/x.safetensors", digest="md5")


def test_writeback_hint_keeps_bytes_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    tensors = [(f"t{i}", rng.standard_normal(1000 + 37 * i).astype("f4")) for i in range(20)]
    expected = b"".join(a.tobytes() for _, a in tensors)
    monkeypatch.setattr(streaming, "_WRITEBACK_BYTES", 4096)  # kick after nearly every tensor
    with open(tmp_path / "raw.bin", "wb") as handle:
        digests = streaming.write_hashed(handle, tensors)
    assert (tmp_path / "raw.bin").read_bytes() == expected
    assert digests == {name: _b3(a.tobytes()) for name, a in tensors}
    memory = io.BytesIO()  # no file descriptor: the hint is skipped
    assert streaming.write_hashed(memory, tensors) == digests
    assert streaming.write_hashed(io.BytesIO(), tensors, "sha256") == {
        name: "sha256:" + hashlib.sha256(a.tobytes()).hexdigest() for name, a in tensors
    }
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
        name: _b3(np.ascontiguousarray(a).astype("<f4").tobytes()) for name, a in tensors
    }
    assert len(spans) == 2  # only the two tensors that lie in the map went through the kernel
    del whole, tensors


def test_a_forked_child_hashes_after_the_parent_did(tmp_path: Path) -> None:
    """BLAKE3's shared thread pool does not survive fork(): the child must not wait for it."""
    import os
    import time

    from weightio.format.hashing import hash_bytes

    data = np.random.default_rng(6).integers(0, 255, size=8 << 20, dtype=np.uint8)
    expected = hash_bytes(memoryview(data), "blake3", parallel=True)  # the parent's pool runs now
    assert expected == digest_of(data)
    marker = tmp_path / "child.txt"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            marker.write_text(hash_bytes(memoryview(data), "blake3", parallel=True))
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung hashing")
    assert marker.read_text() == expected


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (257, 513), (1024, 256), (600, 1)])
def test_tiled_copy_of_transposed_and_permuted_views_is_bit_exact(shape: tuple[int, int]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    base = rng.standard_normal(shape).astype("f4")
    base.reshape(-1)[::97] = np.nan  # payloads travel too
    with ThreadPoolExecutor(1) as pool:
        for view in (base.T, base[:, ::-1].T):
            for worker in (None, pool):
                out = np.empty(view.shape, view.dtype)
                streaming.tiled_copy(view, out, worker)
                assert out.tobytes() == np.ascontiguousarray(view).tobytes()
        kernel = rng.standard_normal((3, 3, 5, 7)).astype("f2")  # a Keras conv kernel, permuted
        view = kernel.transpose(3, 2, 0, 1)
        out = np.empty(view.shape, view.dtype)
        streaming.tiled_copy(view, out, pool)
        assert out.tobytes() == np.ascontiguousarray(view).tobytes()


def test_transposed_tensors_are_written_from_reused_buffers_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    kernels = [(f"k{i}", rng.standard_normal((300 + i, 500 - i)).astype("f4").T) for i in range(5)]
    expected = b"".join(np.ascontiguousarray(a).tobytes() for _, a in kernels)
    with open(tmp_path / "raw.bin", "wb") as handle:
        digests = streaming.write_hashed(handle, kernels)
    assert (tmp_path / "raw.bin").read_bytes() == expected
    assert digests == {name: _b3(np.ascontiguousarray(a).tobytes()) for name, a in kernels}
