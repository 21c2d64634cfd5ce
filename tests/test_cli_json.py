"""``--json`` on convert, verify, cast and clean; help texts name values, never Python types."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import weightio

torch = pytest.importorskip("torch")

VERBS = ["convert", "inspect", "diff", "explain", "plot", "run", "verify", "cast", "clean", "schema"]
VERBS += ["fold", "prune", "quantize", "importance"]  # the transforms (issue 17)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_json_outputs(tmp_path):
    torch.manual_seed(0)
    weightio.convert(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp_path / "a.safetensors")
    converted = json.loads(_cli("convert", str(tmp_path / "a.safetensors"),
                                str(tmp_path / "b.pt2"), "--json").stdout)
    assert converted["target"] == "pt2" and converted["verification"]["status"] == "verified"
    assert converted["verification"]["checks"][0]["witnesses"] == ["numpy", "pt2"]
    verified = json.loads(_cli("verify", str(tmp_path / "a.safetensors"), "--json").stdout)
    assert verified["ok"] and verified["tensors"] == 2 and verified["digests"] == ["blake3"]
    assert verified["verification"][0]["status"] == "verified"
    cast = json.loads(_cli("cast", str(tmp_path / "a.safetensors"), str(tmp_path / "h.safetensors"),
                           "--dtype", "float16", "--json").stdout)
    assert cast["dtype"] == "F16" and {t["key"] for t in cast["cast"]} == {"0.weight", "0.bias"}
    (tmp_path / ".x.safetensors.weightio-tmp-0123456789ab").write_bytes(b"")
    cleaned = json.loads(_cli("clean", str(tmp_path), "--older-than", "0", "--json").stdout)
    assert cleaned == {"dry_run": False, "removed": [str(tmp_path / ".x.safetensors.weightio-tmp-0123456789ab")]}
    schema = _cli("schema", "--out", str(tmp_path / "s.json"))
    assert schema.returncode == 0 and "wrote" in schema.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_no_python_types(verb):
    done = _cli(verb, "--help")
    assert done.returncode == 0
    assert not any(t in done.stdout for t in ("<str>", "<int>", "<float>", "list[", "<path>"))
    if verb == "convert":
        assert "skops" in done.stdout and "joblib" in done.stdout
