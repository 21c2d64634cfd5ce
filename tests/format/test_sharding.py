"""Sharded archives: bit-exact round trip, ecosystem readers open the shards, bad indexes refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import weightio
from weightio.cli import app
from weightio.errors import ExternalReferenceError, MalformedFileError
from weightio.format.sharding import parse_size
from weightio.format.streaming import iter_chunks


def _state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "embed.weight": rng.standard_normal((64, 32)).astype("f4"),
        "block.0.fc.weight": rng.standard_normal((48, 32)).astype("f4"),
        "block.0.fc.bias": rng.standard_normal(48).astype("f4"),
        "block.1.fc.weight": rng.standard_normal((32, 48)).astype("f2"),
        "head.weight": rng.standard_normal((10, 32)).astype("f8"),
        "steps": np.arange(7, dtype="i8"),
    }


@pytest.fixture
def sharded(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    state = _state()
    archive = weightio.read(state)
    index = weightio.save(archive, tmp_path / "model.safetensors", max_shard_size="8KB")
    return index, state


def test_sharded_round_trip_is_bit_exact(sharded) -> None:
    index, state = sharded
    assert index.name == "model.safetensors.index.json"
    shards = sorted(p.name for p in index.parent.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    for source in (index, index.parent):  # the index file or the folder
        loaded = weightio.load(source, verify=True)
        read = weightio.read(source)
        for key, array in state.items():
            for got in (loaded.tensors[key], read.tensors[key]):
                assert got.dtype == array.dtype and got.tobytes() == array.tobytes()


@pytest.mark.torch
def test_ecosystem_readers_open_the_shards(sharded) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    index, state = sharded
    data = json.loads(index.read_text())
    assert "weightio.spec" in data["metadata"] and data["metadata"]["total_size"] == sum(
        a.nbytes for a in state.values()
    )
    rebuilt = {}
    for shard in sorted(set(data["weight_map"].values())):  # what transformers does
        with safe_open(index.parent / shard, framework="np") as handle:
            assert set(handle.keys()) == {k for k, v in data["weight_map"].items() if v == shard}
        rebuilt.update(load_file(index.parent / shard))
    assert set(rebuilt) == set(state)
    for key, array in state.items():
        assert rebuilt[key].numpy().tobytes() == array.tobytes()


def test_cli_convert_writes_shards_and_inspect_reads_them(tmp_path: Path) -> None:
    weightio.save(weightio.read(_state()), tmp_path / "src.safetensors")
    runner = CliRunner()
    out = tmp_path / "out" / "big.safetensors"
    out.parent.mkdir()
    result = runner.invoke(
        app, ["convert", str(tmp_path / "src.safetensors"), str(out), "--max-shard-size", "10KB"]
    )
    assert result.exit_code == 0, result.output
    assert (out.parent / "big.safetensors.index.json").is_file()
    for target in (out.parent / "big.safetensors.index.json", out.parent):
        shown = runner.invoke(app, ["inspect", str(target), "--json"])
        assert shown.exit_code == 0, shown.output
        assert "embed" in shown.output


def test_model_that_fits_is_written_as_one_file(tmp_path: Path) -> None:
    path = weightio.save(weightio.read(_state()), tmp_path / "m.safetensors", max_shard_size="2GB")
    assert path == tmp_path / "m.safetensors" and path.is_file()
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1GiB") == 2**30


@pytest.mark.parametrize("shard", ["../x.safetensors", "/etc/x.safetensors", "sub/x.safetensors"])
def test_index_naming_outside_its_folder_is_refused(sharded, shard: str) -> None:
    index, _ = sharded
    data = json.loads(index.read_text())
    data["weight_map"]["steps"] = shard
    index.write_text(json.dumps(data))
    with pytest.raises(ExternalReferenceError):
        weightio.load(index)


def test_escaping_symlink_missing_shard_and_double_tensor_are_refused(sharded, tmp_path) -> None:
    index, _ = sharded
    folder = index.parent
    data = json.loads(index.read_text())
    first = sorted(set(data["weight_map"].values()))[0]
    outside = tmp_path.parent / f"outside-{os.getpid()}.safetensors"
    os.replace(folder / first, outside)
    os.symlink(outside, folder / first)
    with pytest.raises(ExternalReferenceError, match="outside"):
        weightio.load(index)
    os.unlink(folder / first)
    with pytest.raises(MalformedFileError, match="missing"):
        weightio.load(index)
    os.replace(outside, folder / first)
    second = sorted(set(data["weight_map"].values()))[1]
    moved = next(k for k, v in data["weight_map"].items() if v == second)
    data["weight_map"][moved] = first
    index.write_text(json.dumps(data))
    with pytest.raises(MalformedFileError, match="index places"):
        weightio.load(index)


def test_iter_chunks_covers_every_element_in_order() -> None:
    array = np.arange(1000, dtype="f4").reshape(40, 25)
    for view in (array, array.T):
        pieces = list(iter_chunks(view, chunk_bytes=256))
        assert all(p.ndim == 1 for p in pieces)
        assert np.array_equal(np.concatenate(pieces), np.ascontiguousarray(view).reshape(-1))


def test_a_single_file_save_retires_a_sharded_set_of_the_same_name(tmp_path):
    """Its index would shadow the new file when the folder is read; it is stale now."""
    import numpy as np

    from weightio.errors import TargetExistsError
    from weightio.format.store import load, save
    from weightio.verbs.read import read

    arrays = {f"l{i}.weight": np.full((64, 64), i, "f4") for i in range(4)}
    from weightio.format.weights_only import archive_from_state_dict
    from weightio.spec.model import Provenance

    def make(offset: float):
        data = {k: v + offset for k, v in arrays.items()}
        return archive_from_state_dict(data, name="m", provenance=Provenance(
            source_framework="weightio", weightio_version="t", created_at="now"))

    target = tmp_path / "model.safetensors"
    index = save(make(0), target, max_shard_size=20_000)
    assert index.name == "model.safetensors.index.json"
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) == 4
    with pytest.raises(TargetExistsError):
        save(make(1), target, overwrite=False)  # the set counts as the target
    save(make(1), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    np.testing.assert_array_equal(read(target).tensors["l2.weight"], arrays["l2.weight"] + 1)
    load(target, verify=True)
