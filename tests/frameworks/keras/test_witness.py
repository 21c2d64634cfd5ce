"""The Keras witness process: ``convert`` runs a Keras file's model in a second process started
as it begins, so TensorFlow's import overlaps the target's build (``frameworks/keras/witness.py``).

The proof is the same as in-process (same checks, same model, same figures), this process never
imports TensorFlow, a weightio error in the witness comes back as the same class, and a witness
that dies any other way is replaced by the model run in this process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weightio.errors import SourceNotFoundError
from weightio.frameworks.keras.files.reader import read_model_file_checked
from weightio.frameworks.keras.witness import KerasFileRunner

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    path = tmp_path_factory.mktemp("witness") / "small.keras"
    model.save(path)
    return path


def test_convert_is_verified_without_tensorflow_in_this_process(model_file, tmp_path) -> None:
    """To PyTorch (the target's build is what the witness overlaps); a framework-free target
    or a Keras one runs the source in-process, as before."""
    code = (
        "import sys, weightio\n"
        f"result = weightio.convert({str(model_file)!r}, {str(tmp_path / 'out.pt')!r})\n"
        "print(result.verification.status, [c.witnesses for c in result.verification.checks])\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    status, imported = done.stdout.strip().splitlines()
    assert status == "verified [('keras', 'numpy'), ('keras', 'pt')]"
    assert imported == "False False"
    assert done.stderr == ""  # TensorFlow's start-up lines stay in the witness


def test_witness_outputs_equal_keras_in_this_process(model_file) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype("float32")
    witness = KerasFileRunner(model_file)
    witness.spawn()  # this test process has imported Keras, so start() would run it here
    from_witness = witness([x])
    in_process = KerasFileRunner(model_file)([x])  # never started: loads here
    assert np.array_equal(from_witness[0], in_process[0])
    expected = keras.saving.load_model(model_file)(x, training=False)
    assert np.array_equal(from_witness[0], np.asarray(expected))


def test_a_witness_error_comes_back_typed(model_file, tmp_path) -> None:
    """The file is gone by the time the witness reads it (its config was checked here)."""
    config = read_model_file_checked(model_file)[1]
    witness = KerasFileRunner(tmp_path / "gone.keras", config=config)
    witness.spawn()
    assert witness._process is not None
    with pytest.raises(SourceNotFoundError, match="no such Keras model file"):
        witness([np.zeros((1, 4), "float32")])


def test_a_dead_witness_is_replaced_in_process(model_file) -> None:
    x = np.ones((2, 4), "float32")
    witness = KerasFileRunner(model_file)
    witness.spawn()
    witness._process.kill()
    assert np.array_equal(witness([x])[0], KerasFileRunner(model_file)([x])[0])
    witness.close()  # nothing left to stop


def test_no_witness_process_once_keras_is_imported_here(model_file) -> None:
    """Keras is imported in this test process: a second process would import TensorFlow again."""
    witness = KerasFileRunner(model_file)
    witness.start()
    assert witness._process is None
    assert witness([np.ones((1, 4), "float32")])[0].shape == (1, 1)


def test_a_config_off_the_allowlist_starts_no_process(tmp_path) -> None:
    """Refused later, in this process and before Keras loads anything, as without a witness."""
    config = {"class_name": "Sequential", "module": "os", "config": {"layers": []}}
    witness = KerasFileRunner(tmp_path / "model.keras", config=config)
    witness.spawn()
    assert witness._process is None


@pytest.mark.slow
def test_the_cli_starts_the_witness_first_and_convert_uses_it(model_file, tmp_path) -> None:
    """``weightio convert MODEL.keras OUT.pt2`` starts the witness as its first step (it imports
    Keras before the file is named to it); ``convert`` hands it the checked file, and the
    ``.pt2`` it writes is the program the proof ran (loaded back from the file's bytes)."""
    out = tmp_path / "out.pt2"
    code = (
        "import sys, weightio.cli as cli, weightio.frameworks.keras.witness as w\n"
        "taken = []\n"
        "take = w.take_early\n"
        "w.take_early = lambda: taken.append(take()) or taken[-1]\n"
        f"sys.argv = ['weightio', 'convert', {str(model_file)!r}, {str(out)!r}]\n"
        "try:\n"
        "    cli.main()\n"
        "finally:\n"
        "    print('early', [p is not None for p in taken], 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "early [True] False" in done.stdout
    assert "keras vs pt2" in done.stdout and done.stderr == ""
    import torch

    program = torch.export.load(out).module()
    x = np.random.default_rng(2).standard_normal((3, 4)).astype("float32")
    expected = np.asarray(keras.saving.load_model(model_file)(x, training=False))
    got = program(torch.from_numpy(x)).detach().numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5 * max(1.0, float(np.max(np.abs(expected))))


def test_no_early_witness_for_other_commands(model_file, tmp_path) -> None:
    from weightio import cli

    for args in (["convert", str(model_file), str(tmp_path / "a.safetensors")],
                 ["convert", str(model_file), str(tmp_path / "a.pt2"), "--no-verify"],
                 ["inspect", str(model_file)],
                 ["convert", str(model_file), str(tmp_path / "a.pt2")]):  # keras imported here
        cli._start_witness_early(args)
        assert cli._EARLY_WITNESS == []


def test_keras_imported_lean_leaves_the_hidden_packages_importable() -> None:
    """Keras (in a fresh process) is imported with matplotlib and scikit-learn absent; both
    import normally afterwards, and Keras runs a model."""
    code = (
        "import sys\n"
        "from weightio.frameworks.keras.witness import import_keras_lean\n"
        "import_keras_lean()\n"
        "print('matplotlib' in sys.modules, 'sklearn' in sys.modules)\n"
        "import sklearn, keras\n"
        "m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
        "print(m(keras.ops.ones((1, 2))).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False False", "(1, 1)"]
