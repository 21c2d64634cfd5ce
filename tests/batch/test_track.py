"""``weightio track`` over a 30-checkpoint run of a small MLP trained on scikit-learn's digits,
every figure asserted against a direct numpy computation; the HTML report (one curve per layer)
rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")

from batch_helpers import cli

from weightio.batch import track

LAYERS = ("fc1", "fc2", "head")
PRUNED = (0, 1, 2)  # units of fc2 zeroed (and kept at zero) from checkpoint 10 on
PRUNE_AT, FREEZE_AT = 10, 22  # fc1 is frozen (a fine-tuning schedule) from checkpoint 22 on


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 32)
        self.fc2 = torch.nn.Linear(32, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 checkpoints, 10 SGD steps apart: ``step-NNNNNN.pt`` = {"model", "step", "optimizer"}."""
    folder = tmp_path_factory.mktemp("digits-run")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    batch = 0
    for index in range(30):
        if index == PRUNE_AT:
            with torch.no_grad():
                model.fc2.weight[list(PRUNED)] = 0.0
                model.fc2.bias[list(PRUNED)] = 0.0
        if index == FREEZE_AT:
            model.fc1.requires_grad_(False)
        torch.save({"model": model.state_dict(), "step": index * 10, "optimizer": optimizer.state_dict()},
                   folder / f"step-{index * 10:06d}.pt")
        for _ in range(10):
            rows = order[(batch * 32) % len(x):][:32]
            batch += 1
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            if index >= PRUNE_AT:
                model.fc2.weight.grad[list(PRUNED)] = 0.0
                model.fc2.bias.grad[list(PRUNED)] = 0.0
            optimizer.step()
    return folder


def _expected(run: Path) -> dict[str, dict[str, list]]:
    """The figures computed directly: each layer's tensors as one float64 vector per checkpoint."""
    vectors = {name: [] for name in LAYERS}
    dead = {name: [] for name in LAYERS}
    for path in sorted(run.glob("step-*.pt")):
        state = torch.load(path, weights_only=True)["model"]
        for name in LAYERS:
            w = state[f"{name}.weight"].double().numpy()
            b = state[f"{name}.bias"].double().numpy()
            vectors[name].append(np.concatenate([w.ravel(), b.ravel()]))
            dead[name].append(int(np.sum(~((w != 0).any(axis=1) | (b != 0)))))
    out = {}
    for name, vs in vectors.items():
        norms = [float(np.linalg.norm(v)) for v in vs]
        delta = [None] + [float(np.linalg.norm(vs[i] - vs[i - 1])) for i in range(1, len(vs))]
        out[name] = {
            "norm": norms,
            "from_first": [float(np.linalg.norm(v - vs[0])) / norms[0] for v in vs],
            "from_previous": [None] + [delta[i] / norms[i - 1] for i in range(1, len(vs))],
            "update_ratio": [None] + [delta[i] / norms[i] for i in range(1, len(vs))],
            "dead_units": dead[name],
        }
    return out


def _close(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            assert g == pytest.approx(w, rel=1e-12, abs=1e-15)


def test_track_figures_equal_a_direct_numpy_computation(run: Path, tmp_path: Path) -> None:
    page = tmp_path / "track.html"
    done = cli("track", str(run), "--json", "--html", str(page), "--workers", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = _expected(run)
    assert report["format"] == "weightio.track/1" and report["steps"] == [10 * i for i in range(30)]
    assert [layer["name"] for layer in report["layers"]] == list(LAYERS)
    for layer in report["layers"]:
        want = expected[layer["name"]]
        for figure in ("norm", "from_first", "from_previous", "update_ratio"):
            _close([c[figure] for c in layer["curve"]], want[figure])
        assert [c["dead_units"] for c in layer["curve"]] == want["dead_units"]
    by_name = {layer["name"]: layer for layer in report["layers"]}
    # fc1 was frozen once checkpoint 22 (step 220) was written: unchanged from there on
    assert by_name["fc1"]["stopped_at"] == FREEZE_AT * 10
    assert by_name["fc2"]["stopped_at"] is None and by_name["head"]["stopped_at"] is None
    assert report["summary"]["stopped"] == ["fc1"]
    # fc2's pruned units: dead from checkpoint 10 (step 100) to the end
    assert by_name["fc2"]["dead_units"] == 3 and by_name["fc2"]["dead_unit_indices"] == list(PRUNED)
    assert by_name["fc2"]["dead_since"] == PRUNE_AT * 10 and report["summary"]["with_dead_units"] == ["fc2"]
    # what the data shows: the ordering of the final relative change, as numpy has it
    final = {name: expected[name]["from_first"][-1] for name in LAYERS}
    assert report["summary"]["most_moved"] == max(final, key=final.get)
    assert report["summary"]["least_moved"] == min(final, key=final.get)
    assert report["summary"]["least_moved"] == "fc1" and report["summary"]["most_moved"] == "head"
    _check_page(page, tmp_path)


def test_steps_from_a_checkpoint_entry_and_unreadable_ones_left_out(run: Path, tmp_path: Path) -> None:
    # names whose numbers say nothing of the order; the entry "step" does
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for index, path in enumerate(sorted(run.glob("step-*.pt"))[:6]):
        shutil.copy(path, shuffled / f"ckpt-{(index * 7) % 6}-{index}x.pt")
    (shuffled / "ckpt-broken.pt").write_bytes(b"garbage")
    report = track([str(shuffled)], step_from="step", workers=1)
    assert report.steps == [0, 10, 20, 30, 40, 50]
    assert [e.error.type for e in report.errors] == ["MalformedFileError"]
    expected = _expected(run)
    _close([c.from_previous for c in report.layer("head").curve], expected["head"]["from_previous"][:6])
    with pytest.raises(Exception, match="cannot tell the step"):
        track([str(shuffled / "ckpt-broken.pt"), str(tmp_path / "nostep.pt")])


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _check_page(page: Path, tmp_path: Path) -> None:
    text = page.read_text()
    assert "default-src 'none'" in text and not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (and .ci/run could not install Debian's package)")
    shot = tmp_path / "shot.png"
    common = [browser, *CHROMIUM_FLAGS, "--window-size=1280,1800"]
    done = subprocess.run([*common, f"--user-data-dir={tmp_path / 'p1'}", f"--screenshot={shot}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    dom = subprocess.run([*common, f"--user-data-dir={tmp_path / 'p2'}", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    # the sort script ran: the layer table, most moved first; two charts of one curve per layer
    table = re.search(r'<table id="wio-table"([^>]*)>(.*?)</table>', dom, re.S)
    assert 'data-sorted-by="from_first"' in table.group(1) and 'data-rows="3"' in table.group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(2).split("<tbody>")[1], re.S)
    assert [re.findall(r"<td[^>]*>([^<]*)</td>", row)[1] for row in rows] == ["head", "fc2", "fc1"]
    for metric in ("from_first", "update_ratio"):
        chart = re.search(rf'data-metric="{metric}">(.*?)</figure>', dom, re.S).group(1)
        curves = re.findall(r'<polyline class="curve" data-layer="([^"]+)" data-points="(\d+)"', chart)
        assert [name for name, _ in curves] == list(LAYERS)
        assert all(int(n) >= 20 for _, n in curves), curves  # fc1's frozen tail has no log point
