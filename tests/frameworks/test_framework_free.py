"""Keras and PyTorch files read and converted with no framework importable, bit-exact.

Each conversion runs in a subprocess whose ``sys.meta_path`` refuses tensorflow, keras and torch;
its archive is then compared tensor for tensor, byte for byte, with what the framework path
(``keras.saving.load_model`` / ``torch.load(weights_only=True)``) reads from the same file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.errors import (
    ExternalReferenceError,
    MalformedFileError,
    UnsafeFormatError,
    UnsupportedDtypeError,
)

BLOCKER = """
import sys
class _NoFrameworks:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "torch", "tf_keras", "jax"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _NoFrameworks())
"""


def run_blocked(code: str) -> str:
    script = BLOCKER + code + (
        "\nimport json\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'torch'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # nothing slipped through
    return done.stdout


def assert_same_tensors(ours: weightio.Archive, theirs: weightio.Archive) -> None:
    assert list(ours.tensors) == list(theirs.tensors)
    for key in ours.tensors:
        a, b = np.asarray(ours.tensors[key]), np.asarray(theirs.tensors[key])
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), key
    assert [(l.name, l.kind) for l in ours.spec.layers] == [
        (l.name, l.kind) for l in theirs.spec.layers
    ]


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    keras = pytest.importorskip("keras")
    layers = keras.layers
    folder = tmp_path_factory.mktemp("keras_files")
    keras.utils.set_random_seed(1)
    seq = keras.Sequential(
        [keras.Input((6,)), layers.Dense(8, activation="relu", name="fc1"),
         layers.Dropout(0.2, name="drop"), layers.Dense(3, name="fc2"),
         layers.Softmax(name="probs")],
        name="seq",
    )
    x = keras.Input((5,), name="x")
    h = layers.Dense(7, activation="tanh", name="h")(x)
    inner = keras.Sequential([keras.Input((7,)), layers.Dense(4, name="inner_fc")], name="inner")
    out = layers.Dense(2, name="head")(inner(h))
    side = layers.LeakyReLU(negative_slope=0.1, name="side")(h)
    functional = keras.Model(x, [out, side], name="func")
    mixed = keras.Sequential(
        [keras.Input((4,)), layers.Dense(3, dtype="bfloat16", name="bf")], name="mixed"
    )
    paths = {
        "seq.keras": seq, "seq.h5": seq, "func.keras": functional, "func.h5": functional,
        "mixed.keras": mixed,
    }
    for name, model in paths.items():
        model.save(folder / name)
    seq.save_weights(folder / "seq.weights.h5")
    return {name: folder / name for name in [*paths, "seq.weights.h5"]}


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("torch_files")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    state = dict(net.state_dict())
    state["tied_t"] = state["0.weight"].t()  # a strided view sharing storage
    state["half"] = torch.randn(3, 2).half()
    state["bf16"] = torch.randn(5).bfloat16()
    state["f8"] = torch.randn(4).to(torch.float8_e4m3fn)
    torch.save(state, folder / "zip.pt")
    legacy = {k: v for k, v in state.items() if k != "f8"}  # torch cannot reload legacy float8
    torch.save(legacy, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"model": net.state_dict(), "epoch": 3}, folder / "checkpoint.bin")
    return {p.name: p for p in folder.iterdir()}


@pytest.mark.keras
def test_keras_files_convert_without_tensorflow_bit_exact(keras_files, tmp_path) -> None:
    from weightio.frameworks.keras.model import read_keras_file

    sources = ["seq.keras", "seq.h5", "func.keras", "func.h5", "mixed.keras"]
    outputs = {name: tmp_path / f"{name}.safetensors" for name in sources}
    lines = [
        "import weightio",
        *[
            f"weightio.convert({str(keras_files[n])!r}, {str(outputs[n])!r})"
            for n in sources
        ],
        f"weightio.save(weightio.read({str(keras_files['seq.weights.h5'])!r}, "
        f"architecture={str(keras_files['seq.keras'])!r}), {str(tmp_path / 'w.safetensors')!r})",
    ]
    run_blocked("\n".join(lines))
    for name in sources:
        framework, _ = read_keras_file(keras_files[name])
        assert_same_tensors(weightio.load(outputs[name], verify=True), framework)
    assert_same_tensors(
        weightio.load(tmp_path / "w.safetensors"), read_keras_file(keras_files["seq.keras"])[0]
    )


@pytest.mark.torch
def test_torch_files_convert_without_torch_bit_exact(torch_files, tmp_path) -> None:
    from weightio.frameworks.torch.files.state_dict import read_torch_file

    cases = [("zip.pt", None), ("legacy.pth", None), ("checkpoint.bin", "model")]
    lines = ["import sys", "from weightio.cli import main"]
    for name, key in cases:
        argv = ["weightio", "convert", str(torch_files[name]), str(tmp_path / f"{name}.safetensors")]
        argv += ["--key", key] if key else []
        lines += [f"sys.argv = {argv!r}", "try:\n    main()\nexcept SystemExit as e:\n"
                  "    assert not e.code, e.code"]
    run_blocked("\n".join(lines))
    for name, key in cases:
        framework = read_torch_file(torch_files[name], key=key)
        ours = weightio.load(tmp_path / f"{name}.safetensors", verify=True)
        assert_same_tensors(ours, framework)


@pytest.mark.torch
def test_read_pt_in_process_matches_torch_path(torch_files) -> None:
    from weightio.frameworks.torch.files.state_dict import read_torch_file

    for name in ("zip.pt", "legacy.pth"):
        assert_same_tensors(weightio.read(torch_files[name]), read_torch_file(torch_files[name]))


@pytest.mark.keras
def test_written_keras_file_loads_in_keras_and_computes_the_same(keras_files, tmp_path) -> None:
    import keras

    from weightio.frameworks.keras.files.writer import write_keras_file

    for name in ("seq.keras", "func.keras", "mixed.keras"):
        source = keras.saving.load_model(keras_files[name])
        archive = weightio.read(keras_files[name])
        write_keras_file(archive, tmp_path / name)
        loaded = keras.saving.load_model(tmp_path / name)
        x = np.random.default_rng(0).standard_normal((4, *source.input_shape[1:])).astype("f4")
        for ref, got in zip(_outputs(source(x)), _outputs(loaded(x)), strict=True):
            assert np.max(np.abs(ref - got)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))
        if name == "func.keras":  # its nested Sequential is written flat: inner/inner_fc is
            flat = weightio.read(tmp_path / name)  # inner_inner_fc, the same arrays in order
            assert [t.tobytes() for t in map(np.asarray, flat.tensors.values())] == [
                t.tobytes() for t in map(np.asarray, archive.tensors.values())]
            assert "inner_inner_fc" in [layer.name for layer in flat.spec.layers]
            continue
        assert_same_tensors(weightio.read(tmp_path / name), archive)


def _outputs(result) -> list[np.ndarray]:
    return [np.asarray(r, dtype="f4") for r in (result if isinstance(result, (list, tuple)) else [result])]


@pytest.mark.keras
def test_functional_keras_file_written_without_keras(tmp_path) -> None:
    import keras

    x = keras.Input((3,), name="x")
    h = keras.layers.Dense(5, activation="elu", name="h")(x)
    a = keras.layers.Dense(2, name="a")(h)
    b = keras.layers.Activation("sigmoid", name="b")(keras.layers.Dense(4, name="pre")(h))
    model = keras.Model(x, [a, b], name="two_heads")
    weightio.save(weightio.read(model), tmp_path / "m.safetensors")
    run_blocked(
        "import weightio\nfrom weightio.frameworks.keras.files.writer import write_keras_file\n"
        f"write_keras_file(weightio.load({str(tmp_path / 'm.safetensors')!r}), "
        f"{str(tmp_path / 'm.keras')!r})"
    )
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x0 = np.random.default_rng(1).standard_normal((6, 3)).astype("f4")
    for ref, got in zip(model(x0), loaded(x0)):
        ref, got = np.asarray(ref), np.asarray(got)
        assert np.max(np.abs(ref - got)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.torch
def test_pickle_payload_is_refused_by_name_and_never_runs(tmp_path) -> None:
    import torch

    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    for legacy in (False, True):
        path = tmp_path / f"evil{int(legacy)}.pt"
        torch.save({"w": torch.ones(2), "x": Payload()}, path,
                   _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsafeFormatError, match=r"posix\.system|os\.system"):
            weightio.read(path)
    assert not canary.exists()


@pytest.mark.torch
def test_torchscript_archive_is_refused(tmp_path) -> None:
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(UnsafeFormatError, match="TorchScript"):
        weightio.read(path)


@pytest.mark.keras
def test_keras_zip_with_escaping_member_is_refused(keras_files, tmp_path) -> None:
    import zipfile

    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(keras_files["seq.keras"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../evil", b"x")
    with pytest.raises(MalformedFileError, match="evil"):
        weightio.read(bad)
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.keras
def test_h5_links_and_opaque_types_are_refused(keras_files, tmp_path) -> None:
    import shutil

    import h5py

    linked = tmp_path / "linked.weights.h5"
    shutil.copy(keras_files["seq.weights.h5"], linked)
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["k"] = np.ones((6, 8), "f4")
    with h5py.File(linked, "a") as h5:
        group = h5["layers/dense/vars"]
        del group["0"]
        group["0"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/k")
    with pytest.raises(ExternalReferenceError, match="ExternalLink"):
        weightio.read(linked, architecture=keras_files["seq.keras"])

    opaque = tmp_path / "opaque.weights.h5"
    shutil.copy(keras_files["seq.weights.h5"], opaque)
    with h5py.File(opaque, "a") as h5:
        group = h5["layers/dense/vars"]
        del group["1"]
        group["1"] = np.zeros(8, "u2").view("V2")
    with pytest.raises(UnsupportedDtypeError, match="bfloat16"):
        weightio.read(opaque, architecture=keras_files["seq.keras"])


def test_weights_h5_without_architecture_says_what_to_pass(tmp_path) -> None:
    path = tmp_path / "m.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(Exception, match="architecture="):
        weightio.read(path)
