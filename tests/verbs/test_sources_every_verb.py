"""Every verb that reads a source takes the sources users have: a training checkpoint (``--key``,
or its only state dict picked and named), a ``.weights.h5`` with ``--architecture``, and a
whole-module ``torch.save(model)`` with ``--trust-pickle``. Messages speak the CLI's words.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.cli import cli_words
from weightio.errors import MalformedFileError, UnsafeFormatError

torch = pytest.importorskip("torch")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightio", *args], capture_output=True, text=True, timeout=300,
        cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    model = _mlp()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 6)).sum().backward()
    optimiser.step()  # momentum buffers: the optimizer entry holds tensors too
    paths = {
        "ckpt": folder / "step-100.pt",
        "ckpt2": folder / "step-200.pt",
        "two": folder / "two.pt",
        "whole": folder / "whole.pt",
    }
    torch.save({"model": model.state_dict(), "optimizer": optimiser.state_dict(), "epoch": 3},
               paths["ckpt"])
    later = _mlp(1)
    torch.save({"model": later.state_dict(), "epoch": 4}, paths["ckpt2"])
    torch.save({"model": model.state_dict(), "ema": later.state_dict()}, paths["two"])
    torch.save(model, paths["whole"])
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    np.save(folder / "x.npy", x)
    paths["x"] = folder / "x.npy"
    return paths


def test_lone_state_dict_is_picked_and_named(files):
    archive = weightio.read(files["ckpt"])
    assert archive.spec.provenance.source_key == "model"
    assert set(archive.tensors) == set(_mlp().state_dict())
    done = _cli("inspect", str(files["ckpt"]))
    assert done.returncode == 0, done.stderr
    assert "note: read the state dict under 'model'" in done.stderr


def test_several_state_dicts_need_key_in_cli_words(files):
    with pytest.raises(MalformedFileError, match="several state dicts"):
        weightio.read(files["two"])
    done = _cli("inspect", str(files["two"]))
    assert done.returncode == 2 and "--key" in done.stderr and "key=" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    chosen = weightio.read(files["two"], key="ema")
    assert chosen.spec.provenance.source_key == "ema"
    np.testing.assert_array_equal(chosen.tensors["0.weight"], _mlp(1).state_dict()["0.weight"])


@pytest.mark.parametrize(
    "verb",
    [
        ["inspect", "{ckpt}", "--key", "model"],
        ["inspect", "{ckpt}", "--key", "model", "--stats"],
        ["diff", "{ckpt}", "{ckpt2}", "--key", "model"],
        ["cast", "{ckpt}", "{out}/half.safetensors", "--dtype", "float16", "--key", "model"],
        ["convert", "{ckpt}", "{out}/w.safetensors", "--key", "model"],
        ["plot", "{ckpt}", "--out", "{out}/plots", "--key", "model"],
    ],
    ids=lambda v: " ".join(v[:1] + v[2:3] if v[0] == "diff" else v[:1] + v[-1:]),
)
def test_every_verb_reads_a_training_checkpoint_with_key(files, tmp_path, verb):
    if verb[0] == "plot":
        pytest.importorskip("matplotlib")
    args = [a.format(ckpt=files["ckpt"], ckpt2=files["ckpt2"], out=tmp_path) for a in verb]
    done = _cli(*args)
    assert done.returncode in ((0, 1) if verb[0] == "diff" else (0,)), done.stderr
    assert "note:" not in done.stderr  # the user chose the key: nothing to say
    if verb[0] == "diff":
        assert "0.weight" in done.stdout


@pytest.mark.parametrize("verb", ["run", "explain"])
def test_run_and_explain_read_the_checkpoint_then_say_it_has_no_architecture(files, verb):
    extra = ["--input", str(files["x"])]
    done = _cli(verb, str(files["ckpt"]), "--key", "model", *extra)
    assert done.returncode == 2
    assert "weights only" in done.stderr and "--key" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_whole_module_save_needs_trust_pickle(files, tmp_path):
    with pytest.raises(UnsafeFormatError, match="trust_pickle=True"):
        weightio.read(files["whole"])
    refused = _cli("inspect", str(files["whole"]))
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr
    assert "Traceback" not in refused.stderr
    shown = _cli("inspect", str(files["whole"]), "--trust-pickle")
    assert shown.returncode == 0, shown.stderr
    assert "linear" in shown.stdout.lower()
    done = _cli("convert", str(files["whole"]), str(tmp_path / "m.safetensors"), "--trust-pickle")
    assert done.returncode == 0, done.stderr
    assert "torch vs numpy" in done.stdout
    archive = weightio.load(tmp_path / "m.safetensors")
    assert archive.spec.verification[-1].status == "verified"
    x = np.load(files["x"])
    saved = torch.load(files["whole"], weights_only=False)  # the test trusts its own file
    expected = saved(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(weightio.run(archive, x), expected, rtol=1e-5, atol=1e-6)
    ran = _cli("run", str(files["whole"]), "--trust-pickle", "--input", str(files["x"]),
               "--output", str(tmp_path / "y.npy"))
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


def test_key_on_a_whole_module_is_refused_by_name(files):
    done = _cli("inspect", str(files["whole"]), "--trust-pickle", "--key", "model")
    assert done.returncode == 2 and "whole Sequential module" in done.stderr


def test_python_messages_in_cli_words():
    assert cli_words("pass architecture= (the model's .keras file)") == (
        "pass --architecture (the model's .keras file)"
    )
    assert cli_words("pass trust_pickle=True (CLI: --trust-pickle), or") == "pass --trust-pickle, or"
    assert cli_words("refused with overwrite=False.") == "refused with --no-overwrite."
    assert cli_words("Received: samples=0") == "Received: --samples 0"
    assert cli_words("example_input=x stays") == "example_input=x stays"


# -- .weights.h5 with --architecture, every verb -------------------------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    keras = pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("weights_h5")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(2)])
    model.save(folder / "arch.keras")
    rng = np.random.default_rng(3)
    for weight in model.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    model.save_weights(folder / "tiny.weights.h5")
    x = rng.normal(size=(2, 6)).astype("float32")
    np.save(folder / "x.npy", x)
    np.save(folder / "expected.npy", model.predict(x, verbose=0))
    return {"weights": folder / "tiny.weights.h5", "arch": folder / "arch.keras",
            "x": folder / "x.npy", "expected": folder / "expected.npy"}


@pytest.mark.parametrize(
    "verb",
    [
        ["inspect", "{w}"],
        ["diff", "{w}", "{w}"],
        ["cast", "{w}", "{out}/half.safetensors", "--dtype", "float16"],
        ["explain", "{w}", "--input", "{x}"],
        ["run", "{w}", "--input", "{x}", "--output", "{out}/y.npy"],
        ["plot", "{w}", "--out", "{out}/plots"],
    ],
    ids=lambda v: v[0],
)
def test_every_verb_reads_weights_h5_with_architecture(keras_files, tmp_path, verb):
    if verb[0] == "plot":
        pytest.importorskip("matplotlib")
    args = [a.format(w=keras_files["weights"], x=keras_files["x"], out=tmp_path) for a in verb]
    done = _cli(*args, "--architecture", str(keras_files["arch"]))
    assert done.returncode == 0, done.stderr
    if verb[0] == "run":
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.load(keras_files["expected"]),
                                   rtol=1e-5, atol=1e-6)
    without = _cli(*args)
    assert without.returncode == 2 and "--architecture" in without.stderr
    assert "architecture=" not in without.stderr
