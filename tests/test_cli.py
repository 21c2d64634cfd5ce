"""CLI verbs: --help for each, one failure each, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.format.archive import tensor_ref
from weightio.format.provenance import provenance
from weightio.spec import json_schema
from weightio.spec.core import DenseLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec

VERBS = ["convert", "inspect", "run", "verify", "schema", "diff", "explain", "plot"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightio", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def archive_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 3)).astype("f4")
    b = rng.standard_normal(2).astype("f4")
    spec = ModelSpec(
        name="tiny",
        provenance=provenance("weightio", framework_version=None, source_class=None),
        inputs=[InputSpec(name="x", shape=(3,))],
        layers=[DenseLayer(name="fc", units=2, in_features=3, weight=tensor_ref("fc.weight", w), bias=tensor_ref("fc.bias", b))],
        outputs=[OutputSpec(name="y", layer="fc")],
    )
    path = tmp_path_factory.mktemp("cli") / "tiny.safetensors"
    weightio.save(weightio.Archive(spec, {"fc.weight": w, "fc.bias": b}), path)
    return path


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str) -> None:
    result = cli(verb, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_top_level_help_and_version() -> None:
    assert all(verb in cli("--help").stdout for verb in VERBS)
    assert cli("--version").stdout.strip() == f"weightio {weightio.__version__}"


@pytest.mark.parametrize(
    "args",
    [
        ["convert", "missing.keras", "out.pt2"],
        ["inspect", "missing.safetensors"],
        ["run", "missing.safetensors", "--input", "x.npy"],
        ["verify", "missing.safetensors"],
        ["convert", "model.weird", "out.zzz"],
        ["diff", "missing.safetensors", "other.safetensors"],
        ["explain", "missing.safetensors", "--input", "1"],
        ["plot", "missing.safetensors", "--out", "plots"],
    ],
    ids=["convert", "inspect", "run", "verify", "convert-bad-target", "diff", "explain", "plot"],
)
def test_expected_failures_are_one_line_exit_2(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "weightio", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    assert cli("convert").returncode == 2


def test_inspect_json_and_table(archive_path: Path) -> None:
    data = json.loads(cli("inspect", str(archive_path), "--json").stdout)
    assert data["parameter_count"] == 8
    assert data["layers"][0]["tensors"][0] == {
        "param": "weight", "key": "fc.weight", "shape": [2, 3], "dtype": "F32", "count": 6,
        "role": "trainable", "nbytes": 24,
    }
    assert "fc" in cli("inspect", str(archive_path)).stdout


def test_run_matches_python_api(archive_path: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((4, 3)).astype("f4")
    np.save(tmp_path / "x.npy", x)
    result = cli("run", str(archive_path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr
    expected = weightio.run(weightio.load(archive_path), x)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_run_refuses_pickled_npy(archive_path: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    result = cli("run", str(archive_path), "--input", str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "cannot read the input" in result.stderr


def test_verify_ok_and_corrupt(archive_path: Path, tmp_path: Path) -> None:
    assert cli("verify", str(archive_path)).returncode == 0
    corrupt = tmp_path / "corrupt.safetensors"
    raw = bytearray(archive_path.read_bytes())
    raw[-2] ^= 0x01
    corrupt.write_bytes(bytes(raw))
    result = cli("verify", str(corrupt))
    assert result.returncode == 1
    assert "fc.bias" in result.stderr


def test_schema_prints_the_model_schema() -> None:
    assert json.loads(cli("schema").stdout) == json_schema()


def test_explain_bad_inputs_exit_2(archive_path: Path) -> None:
    for value in ("abc", "1,2", "missing.npy"):
        result = cli("explain", str(archive_path), "--input", value)
        assert result.returncode == 2, (value, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert cli("explain", str(archive_path), "--input", "1,2,3").returncode == 0


def test_convert_no_overwrite_refuses_before_reading_and_leaves_the_file(archive_path: Path,
                                                                          tmp_path: Path) -> None:
    import hashlib

    target = tmp_path / "copy.safetensors"
    assert cli("convert", str(archive_path), str(target)).returncode == 0
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    refused = cli("convert", str(archive_path), str(target), "--no-overwrite")
    assert refused.returncode == 2 and "overwrite" in refused.stderr and "copy.safetensors" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    with pytest.raises(weightio.errors.TargetExistsError):
        weightio.convert(tmp_path / "missing.safetensors", target, overwrite=False)  # before reading
    fresh = tmp_path / "fresh.safetensors"
    assert cli("convert", str(archive_path), str(fresh), "--no-overwrite").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.safetensors", "fresh.safetensors"]
    np.testing.assert_array_equal(weightio.run(weightio.load(fresh), np.ones((1, 3), "f4"))[0],
                                  weightio.run(weightio.load(archive_path), np.ones((1, 3), "f4"))[0])


def _plain_state_dict(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    from weightio.format.safetensors import build_header, write_tensors

    header, ordered = build_header(tensors.items(), {})
    with open(path, "wb") as handle:
        write_tensors(handle, header, ordered)
    return path


def test_diff_of_state_dicts_differing_only_in_a_colliding_key_is_refused(tmp_path: Path) -> None:
    """``x`` and ``x.x`` both group into parameter ``x`` of layer ``x``: one used to replace the
    other, and ``diff`` called two different checkpoints identical. Now both are refused."""
    one = np.ones(2, "f4")
    a = _plain_state_dict(tmp_path / "a.safetensors", {"x": one, "x.x": np.zeros(2, "f4")})
    b = _plain_state_dict(tmp_path / "b.safetensors", {"x": one, "x.x": np.full(2, 5, "f4")})
    out = cli("diff", str(a), str(b))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "'x' and 'x.x'" in out.stderr and "a.safetensors" in out.stderr


def test_the_cli_lets_blas_threads_sleep_unless_the_user_chose() -> None:
    """OpenBLAS's idle threads spin ~0.1 s by default; the CLI shortens that, never overriding
    a value the user set (``weightio.cli.quiet_blas_threads``)."""
    from weightio.cli import BLAS_THREAD_TIMEOUT, quiet_blas_threads

    environ: dict[str, str] = {}
    quiet_blas_threads(environ)
    assert environ == {"OPENBLAS_THREAD_TIMEOUT": BLAS_THREAD_TIMEOUT}
    chosen = {"OPENBLAS_THREAD_TIMEOUT": "28"}
    quiet_blas_threads(chosen)
    assert chosen == {"OPENBLAS_THREAD_TIMEOUT": "28"}
