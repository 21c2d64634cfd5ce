"""Proofs never claim more than was checked.

A conversion records ``verified`` only when the source itself ran (or is a weightio archive,
whose function the numpy runtime is); ``partial`` when the target was compared only with
weightio's own reading; ``not verified`` (and why) when nothing was compared. Option values are
checked before any work, and a bad one is one line with exit 2.
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
from weightio.errors import InvalidInputError

torch = pytest.importorskip("torch")

#: Keras and TensorFlow look uninstalled, so sources that need them cannot be run.
NO_KERAS = """
import sys
for _name in ("tensorflow", "keras", "tf_keras"):
    sys.modules[_name] = None  # import fails, importlib.util.find_spec answers None: not installed
"""

def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def _cli(*args: str, blocked: bool = False) -> subprocess.CompletedProcess[str]:
    code = (NO_KERAS if blocked else "") + (
        "import sys\nfrom weightio.cli import main\nsys.argv = ['weightio', *sys.argv[1:]]\nmain()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.fixture(scope="module")
def module_file(tmp_path_factory) -> Path:
    """An archive of a small torch MLP, written by a verified conversion."""
    path = tmp_path_factory.mktemp("proofs") / "mlp.safetensors"
    weightio.convert(_module(), path)
    return path


def test_live_source_is_verified(tmp_path):
    result = weightio.convert(_module(), tmp_path / "m.safetensors")
    record = result.verification
    assert record.status == "verified" and record.passed and record.note is None
    assert {c.witnesses for c in record.checks} == {("torch", "numpy")}
    assert weightio.load(tmp_path / "m.safetensors").spec.verification[-1].status == "verified"


def test_archive_source_to_a_running_target_is_verified(module_file, tmp_path):
    # the numpy runtime computes an archive's own function, so it witnesses the source
    result = weightio.convert(module_file, tmp_path / "m.pt2")
    assert result.verification.status == "verified"
    assert {c.witnesses for c in result.verification.checks} == {("numpy", "pt2")}


def test_archive_to_archive_compares_nothing_and_says_so(module_file, tmp_path):
    result = weightio.convert(module_file, tmp_path / "copy.safetensors")
    record = weightio.load(tmp_path / "copy.safetensors").spec.verification[-1]
    assert record.status == "not verified" and not record.passed and record.checks == []
    assert "cannot be run here" in record.note
    assert result.summary()[0].startswith("not verified:")


def test_no_verify_is_recorded_as_not_verified(tmp_path):
    weightio.convert(_module(), tmp_path / "m.safetensors", verify=False)
    record = weightio.load(tmp_path / "m.safetensors").spec.verification[-1]
    assert record.status == "not verified" and record.samples == 0 and "skipped" in record.note
    done = _cli("verify", str(tmp_path / "m.safetensors"))
    assert done.returncode == 0, done.stderr
    assert "not verified: verification was skipped" in done.stdout
    assert "passed" not in done.stdout


def test_weights_only_source_is_not_verified(tmp_path):
    state = tmp_path / "sd.pt"
    torch.save(_module().state_dict(), state)
    done = _cli("convert", str(state), str(tmp_path / "sd.safetensors"))
    assert done.returncode == 0, done.stderr
    assert "not verified: the source holds weights only" in done.stdout
    verified = _cli("verify", str(tmp_path / "sd.safetensors"))
    assert "not verified" in verified.stdout and "seeded samples" not in verified.stdout


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--samples", "0", "samples must be an integer >= 1"),
        ("--samples", "-3", "samples must be an integer >= 1"),
        ("--seed", "-1", "seed must be an integer from 0"),
        ("--seed", str(2**32), "seed must be an integer from 0"),
        ("--atol", "-1e-3", "atol must be a finite number >= 0"),
        ("--rtol", "nan", "rtol must be a finite number >= 0"),
    ],
)
def test_bad_option_is_one_line_exit_2_before_any_work(tmp_path, option, value, message):
    destination = tmp_path / "out.safetensors"
    # the source does not exist: a check made before any work wins over the missing file
    done = _cli("convert", str(tmp_path / "absent.pt"), str(destination), option, value)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not destination.exists()


@pytest.mark.parametrize("options", [{"samples": 0}, {"seed": -1}, {"atol": -1.0},
                                     {"samples": True}, {"seed": 1.5}])
def test_bad_option_in_python_is_typed(tmp_path, options):
    with pytest.raises(InvalidInputError):
        weightio.convert(_module(), tmp_path / "m.safetensors", **options)
    assert not (tmp_path / "m.safetensors").exists()


def test_source_not_run_is_partial_and_nothing_compared_is_not_verified(tmp_path):
    """Keras blocked: a .keras file cannot be run, so .pt2 is a partial proof and an archive
    target, which has no runner of its own, compared nothing."""
    keras_file = tmp_path / "mlp.keras"
    made = _cli("convert", str(_saved_module(tmp_path)), str(keras_file), blocked=True)
    assert made.returncode == 0, made.stderr
    partial = _cli("convert", str(keras_file), str(tmp_path / "mlp.pt2"), blocked=True)
    assert partial.returncode == 0, partial.stderr
    assert "numpy vs pt2" in partial.stdout
    assert "partial: source not run (Keras is not installed)" in partial.stdout
    nothing = _cli("convert", str(keras_file), str(tmp_path / "mlp.safetensors"), blocked=True)
    assert nothing.returncode == 0, nothing.stderr
    assert "not verified: source not run (Keras is not installed)" in nothing.stdout
    record = weightio.load(tmp_path / "mlp.safetensors").spec.verification[-1]
    assert record.status == "not verified" and record.checks == []
    shown = _cli("verify", str(tmp_path / "mlp.safetensors"))
    assert "not verified: source not run" in shown.stdout and "passed" not in shown.stdout


def test_partial_proof_is_recorded_in_the_archive(tmp_path):
    """A partial proof keeps its figures and says what they cover (``verify`` prints both)."""
    keras_file = tmp_path / "mlp.keras"
    assert _cli("convert", str(_saved_module(tmp_path)), str(keras_file), blocked=True).returncode == 0
    code = NO_KERAS + (
        "import json, weightio\n"
        f"r = weightio.convert({str(keras_file)!r}, {str(tmp_path / 'x.pt2')!r}).verification\n"
        "print(json.dumps(r.model_dump(mode='json')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "partial" and record["passed"]
    assert "Keras is not installed" in record["note"]
    assert record["checks"] and all(c["witnesses"] == ["numpy", "pt2"] for c in record["checks"])


def _saved_module(tmp_path: Path) -> Path:
    """The MLP as an archive (the subprocesses read it without torch.nn being traced)."""
    path = tmp_path / "mlp-src.safetensors"
    if not path.exists():
        weightio.convert(_module(), path)
    x = np.ones((2, 5), dtype=np.float32)
    assert weightio.run(weightio.load(path), x).shape == (2, 3)
    return path


def test_weights_h5_with_its_keras_architecture_runs_the_source(tmp_path):
    """``.weights.h5`` + ``--architecture model.keras``: Keras loads the checked architecture and
    these weights, so the proof compares Keras itself; before, it compared nothing and said
    'checked on 8 seeded samples ... passed'."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(2)])
    model.save(tmp_path / "tiny.keras")
    for weight in model.weights:  # the weights file differs from the architecture file's own
        weight.assign(np.random.default_rng(1).normal(size=weight.shape).astype("float32"))
    model.save_weights(tmp_path / "tiny.weights.h5")
    done = _cli("convert", str(tmp_path / "tiny.weights.h5"), str(tmp_path / "w.safetensors"),
                "--architecture", str(tmp_path / "tiny.keras"))
    assert done.returncode == 0, done.stderr
    assert "keras vs numpy" in done.stdout and "partial" not in done.stdout
    record = weightio.load(tmp_path / "w.safetensors").spec.verification[-1]
    assert record.status == "verified" and record.passed
    x = np.random.default_rng(2).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(weightio.run(weightio.load(tmp_path / "w.safetensors"), x),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
