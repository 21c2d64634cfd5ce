"""F9 bad targets, the parts that need a policy: symlinks, and a read-only folder even as root;
and overwrite=False on one writer (the eight-writer race is F5 in test_atomic_faults.py).

Policy (docs/security.md): weightio never writes through a link. A target that is a symlink is
replaced by the new regular file and the file it pointed to stays as it was; a link to a folder is
a folder target and refused before anything is serialized.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from weightio.errors import WriteError
from weightio.format.archive import Archive, tensor_ref
from weightio.format.store import load, save
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import ModelSpec, Provenance

ROOT = Path(__file__).resolve().parents[2]


def blob(seed: int) -> Archive:
    array = np.random.default_rng(seed).standard_normal(1000).astype("f4")
    layer = OpaqueLayer(name="blob", tensors={"a": tensor_ref("blob.a", array)})
    spec = ModelSpec(name="blob", weights_only=True, layers=[layer], provenance=Provenance(
        source_framework="weightio", weightio_version="targets", created_at="now"))
    return Archive(spec, {"blob.a": array})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_symlink_target_is_replaced_and_the_linked_file_untouched(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "precious.safetensors"
    save(blob(1), victim)
    before = digest(victim)
    out = tmp_path / "out"
    out.mkdir()
    link = out / "model.safetensors"
    link.symlink_to(victim)

    save(blob(2), link)

    assert not link.is_symlink() and link.is_file()
    assert digest(victim) == before
    np.testing.assert_array_equal(load(link, verify=True).tensors["blob.a"], blob(2).tensors["blob.a"])
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


def test_dangling_symlink_target_becomes_a_file_and_nothing_is_created_at_its_end(tmp_path: Path) -> None:
    link = tmp_path / "model.safetensors"
    pointed = tmp_path / "nowhere" / "x.safetensors"
    link.symlink_to(pointed)
    save(blob(3), link)
    assert link.is_file() and not link.is_symlink()
    assert not pointed.parent.exists()


def test_symlink_to_a_folder_is_a_folder_target(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    link = tmp_path / "model.safetensors"
    link.symlink_to(folder)
    with pytest.raises(WriteError, match="folder") as info:
        save(blob(4), link)
    assert "model.safetensors" in str(info.value)
    assert list(folder.iterdir()) == []
    assert link.is_symlink()


_AS_NOBODY = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from test_atomic_targets import blob
from weightio.format.store import save
from weightio.errors import WriteError
save(blob(5), sys.argv[3])  # as root, so every module a save imports is loaded before the drop
os.setgid(65534); os.setuid(65534)  # drop root: a read-only folder then really is read-only
try:
    save(blob(5), sys.argv[1])
except WriteError as exc:
    print("WriteError", exc)
else:
    print("written")
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="the unprivileged case is test_atomic_faults.test_f9_read_only_parent")
def test_f9_read_only_parent_as_an_unprivileged_user() -> None:
    """CI runs as root, which writes anywhere; the check is made as ``nobody`` in a child."""
    base = Path(tempfile.mkdtemp(prefix="weightio-ro-"))  # pytest's tmp_path is root-only
    try:
        base.chmod(0o755)
        for path in (Path(sys.executable).resolve(), ROOT, *base.parents):
            if not os.access(path, os.R_OK) or path.stat().st_mode & 0o005 != 0o005 and path.is_dir():
                pytest.skip(f"{path} is not readable by other users")
        folder = base / "ro"
        folder.mkdir()
        os.chown(folder, 65534, 65534)
        folder.chmod(0o555)
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, "-c", _AS_NOBODY, str(folder / "model.safetensors"),
                              str(Path(__file__).parent), str(base / "warm.safetensors")], capture_output=True, text=True,
                             env=env, timeout=120, cwd=base)
        assert out.stdout.startswith("WriteError"), out.stdout + out.stderr
        assert "not writable" in out.stdout and "model.safetensors" in out.stdout
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_overwrite_false_refuses_an_existing_file_before_writing(tmp_path: Path) -> None:
    from weightio.errors import TargetExistsError

    target = tmp_path / "model.safetensors"
    save(blob(1), target)
    before = digest(target)
    with pytest.raises(TargetExistsError, match="overwrite=False") as info:
        save(blob(2), target, overwrite=False)
    assert isinstance(info.value, FileExistsError) and "model.safetensors" in str(info.value)
    assert digest(target) == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    save(blob(3), tmp_path / "new.safetensors", overwrite=False)  # a new name is fine
    with pytest.raises(TargetExistsError, match="index"):
        save(blob(3), target, overwrite=False, max_shard_size=2000)
