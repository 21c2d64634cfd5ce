"""weightio.analysis.diff and `weightio diff`: alignment, statuses, figures, JSON shape, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.errors import InvalidInputError, SourceNotFoundError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

NUDGE = 1e-3


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightio", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.fc2 = torch.nn.Linear(16, 8)
        self.fc3 = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two .pt state dicts of one model; in the second, fc2 (weight and bias) nudged by NUDGE."""
    folder = tmp_path_factory.mktemp("diff")
    torch.manual_seed(0)
    net = Net()
    torch.save(net.state_dict(), folder / "before.pt")
    with torch.no_grad():
        net.fc2.weight += NUDGE
        net.fc2.bias -= NUDGE
    torch.save(net.state_dict(), folder / "after.pt")
    return folder / "before.pt", folder / "after.pt"


def test_nudged_layer_is_the_only_change_cli_json(checkpoints: tuple[Path, Path]) -> None:
    before, after = checkpoints
    result = cli("diff", str(before), str(after), "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "weightio.diff/1" and data["alignment"] == "key"
    entries = {e["name"]: e for e in data["entries"]}
    assert set(entries) == {f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    changed = {name for name, e in entries.items() if e["status"] != "identical"}
    assert changed == {"fc2.weight", "fc2.bias"}
    assert {e["status"] for n, e in entries.items() if n not in changed} == {"identical"}
    # The figures are the ones numpy gives on the same tensors.
    sd_a = torch.load(before, weights_only=True)
    sd_b = torch.load(after, weights_only=True)
    a = sd_a["fc2.weight"].numpy().astype(np.float64)
    b = sd_b["fc2.weight"].numpy().astype(np.float64)
    w = entries["fc2.weight"]
    assert w["max_abs_diff"] == pytest.approx(np.abs(b - a).max(), rel=1e-12)
    assert w["relative_l2"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-12)
    assert w["cosine_similarity"] == pytest.approx(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-12)
    assert w["fraction_changed"] == 1.0 and w["numel"] == 128
    assert data["summary"]["most_changed_layer"] == "fc2"
    assert data["summary"]["counts"] == {
        "identical": 4, "changed": 2, "shape_changed": 0, "dtype_changed": 0, "added": 0, "removed": 0
    }
    assert [layer["status"] for layer in data["layers"]] == ["identical", "changed", "identical"]


def test_atol_above_the_nudge_exits_0(checkpoints: tuple[Path, Path]) -> None:
    before, after = checkpoints
    result = cli("diff", str(before), str(after), "--json", "--atol", str(10 * NUDGE))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["identical"] is True and data["atol"] == 10 * NUDGE
    # Below the nudge it still differs; rtol alone can absorb it too (Python API: no torch
    # import per call).
    assert not weightio.diff(before, after, atol=NUDGE / 10).identical
    assert weightio.diff(before, after, rtol=1e6).identical


@pytest.fixture(scope="module")
def plain_safetensors(checkpoints: tuple[Path, Path]) -> tuple[Path, Path]:
    """The same two state dicts as plain .safetensors files: the CLI reads them without torch."""
    from safetensors.numpy import save_file

    out = []
    for path in checkpoints:
        arrays = {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}
        target = path.with_suffix(".safetensors")
        save_file(arrays, str(target))
        out.append(target)
    return out[0], out[1]


def test_text_output_and_bad_input_exit_2(plain_safetensors: tuple[Path, Path], tmp_path: Path) -> None:
    before, after = plain_safetensors
    text = cli("diff", str(before), str(after), "--rtol", "1e-9")
    assert text.returncode == 1 and "fc2.weight" in text.stdout and "most changed layer: fc2" in text.stdout
    assert cli("diff", str(before), str(before)).returncode == 0
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"not really")
    for args in (
        [str(before), str(tmp_path / "missing.pt")],
        [str(before), str(after), "--atol", "-1"],
        [str(before), str(after), "--atol", "abc"],
        [str(before), str(bad)],
    ):
        result = cli("diff", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") or "Usage" in result.stderr
        assert "Traceback" not in result.stderr


def test_python_api_report(checkpoints: tuple[Path, Path]) -> None:
    before, after = checkpoints
    report = weightio.diff(before, after)
    assert isinstance(report, weightio.DiffReport) and not report.identical
    assert {e.name for e in report.changed()} == {"fc2.weight", "fc2.bias"}
    assert json.loads(report.to_json())["entries"][0]["name"] == "fc1.weight"
    assert weightio.diff(before, after, atol=1.0).identical
    with pytest.raises(InvalidInputError):
        weightio.diff(before, after, rtol=float("nan"))
    with pytest.raises(SourceNotFoundError):
        weightio.diff(before, "nope.pt")


def test_diff_is_callable_whatever_the_import_order() -> None:
    code = (
        "import numpy as np\nfrom weightio.analysis.diff import DiffReport\nimport weightio\n"
        "r = weightio.diff({'a.w': np.ones(2, 'f4')}, {'a.w': np.ones(2, 'f4')})\n"
        "assert isinstance(r, DiffReport) and r.identical\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_statuses_shape_dtype_added_removed() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype("f4")
    a = {"l1.weight": w, "l1.bias": np.zeros(3, "f4"), "gone.weight": np.ones(2, "f4")}
    b = {
        "l1.weight": w.astype("f8"),  # same values, another dtype
        "l1.bias": np.zeros(4, "f4"),  # another shape
        "new.weight": np.ones(2, "f4"),
    }
    report = weightio.diff(a, b)
    status = {e.name: e.status for e in report.entries}
    assert status == {
        "l1.weight": "dtype_changed", "l1.bias": "shape_changed", "gone.weight": "removed",
        "new.weight": "added",
    }
    by_name = {e.name: e for e in report.entries}
    assert by_name["l1.weight"].changed_count == 0 and by_name["l1.weight"].max_abs_diff == 0.0
    assert by_name["l1.bias"].max_abs_diff is None
    assert not report.identical
    assert {layer.name: layer.status for layer in report.layers} == {
        "l1": "shape_changed", "gone": "removed", "new": "added"
    }


def test_nan_equals_nan_and_zero_tensors() -> None:
    a = {"x.w": np.array([np.nan, 1.0], "f4"), "x.b": np.zeros(2, "f4")}
    report = weightio.diff(a, {k: v.copy() for k, v in a.items()})
    assert report.identical
    zero = {e.name: e for e in report.entries}["x.b"]
    assert zero.relative_l2 == 0.0 and zero.cosine_similarity is None
    assert json.loads(report.to_json())["entries"][1]["cosine_similarity"] is None


def test_positional_alignment_between_different_names() -> None:
    """Two modules computing the same thing under different attribute names align by position."""

    class Other(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = torch.nn.Linear(6, 16)
            self.second = torch.nn.Linear(16, 8)
            self.third = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.third(torch.relu(self.second(torch.relu(self.first(x)))))

    torch.manual_seed(1)
    net = Net()
    other = Other()
    other.load_state_dict(dict(zip(other.state_dict(), net.state_dict().values())))
    report = weightio.diff(net, other)
    assert report.identical and report.alignment == "position"
    assert [(e.layer, e.layer_b) for e in report.entries[::2]] == [("fc1", "first"), ("fc2", "second"), ("fc3", "third")]
    with torch.no_grad():
        other.third.bias += 0.5
    moved = weightio.diff(net, other)
    assert [e.name for e in moved.changed()] == ["fc3.bias"] and moved.changed()[0].name_b == "third.bias"


def test_model_against_its_state_dict_and_an_extra_layer() -> None:
    torch.manual_seed(2)
    net = Net()
    assert weightio.diff(net, {k: v.clone() for k, v in net.state_dict().items()}).identical
    bigger = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    report = weightio.diff(net, bigger)
    assert report.alignment == "position"
    assert [layer.status for layer in report.layers][-1] == "added"
    assert report.summary.counts["added"] == 2 and not report.identical
