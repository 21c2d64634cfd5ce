"""inspect --stats/--json/--html, plot, diff --plot/--html; the HTML rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.format.archive import tensor_ref
from weightio.format.provenance import provenance
from weightio.spec.core import DenseLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightio", *args], capture_output=True, text=True, timeout=300
    )


def assert_nontrivial_png(data: bytes, *, min_bytes: int = 2000, min_colours: int = 8) -> None:
    """A real picture: a PNG of some size whose pixels are far from uniform."""
    import io

    image_module = pytest.importorskip("PIL.Image")  # Pillow comes with matplotlib (plot extra)
    assert data.startswith(PNG_SIGNATURE) and len(data) >= min_bytes, len(data)
    pixels = np.asarray(image_module.open(io.BytesIO(data)).convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, f"{len(colours)} distinct colours: a blank image?"
    assert pixels.std() > 5, "nearly uniform pixels"


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP archive with known values (a zero, a NaN) to check the figures against."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 5)).astype("f4")
    w1[0, 0] = 0.0
    w1[:, 2] *= 10  # feature 2 dominates the first layer
    b1 = rng.standard_normal(8).astype("f4")
    w2 = rng.standard_normal((2, 8)).astype("f4")
    b2 = np.array([np.nan, 1.0], "f4")
    arrays = {"h.weight": w1, "h.bias": b1, "o.weight": w2, "o.bias": b2}
    spec = ModelSpec(
        name="mlp",
        provenance=provenance("weightio", framework_version=None, source_class=None),
        inputs=[InputSpec(name="x", shape=(5,))],
        layers=[
            DenseLayer(name="h", units=8, in_features=5, activation={"name": "relu"},
                       weight=tensor_ref("h.weight", w1), bias=tensor_ref("h.bias", b1)),
            DenseLayer(name="o", units=2, in_features=8, weight=tensor_ref("o.weight", w2),
                       bias=tensor_ref("o.bias", b2)),
        ],
        outputs=[OutputSpec(name="y", layer="o")],
    )
    path = tmp_path_factory.mktemp("report") / "mlp.safetensors"
    weightio.save(weightio.Archive(spec, arrays), path)
    return path


@pytest.fixture(scope="module")
def conv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights-only state dict with a [out, in, kh, kw] conv weight, as plain safetensors."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("conv") / "conv.safetensors"
    save_file(
        {"conv.weight": rng.standard_normal((6, 3, 5, 5)).astype("f4"),
         "conv.bias": np.zeros(6, "f4"),
         "head.weight": rng.standard_normal((2, 24)).astype("f4")},
        str(path),
    )
    return path


def test_inspect_header_only_json_has_no_stats(mlp_path: Path) -> None:
    data = json.loads(cli("inspect", str(mlp_path), "--json").stdout)
    assert all("stats" not in t for layer in data["layers"] for t in layer["tensors"])


def test_inspect_stats_json_matches_numpy(mlp_path: Path) -> None:
    data = json.loads(cli("inspect", str(mlp_path), "--stats", "--json").stdout)
    archive = weightio.load(mlp_path)
    for layer in data["layers"]:
        for t in layer["tensors"]:
            array = np.asarray(archive.tensors[t["key"]], dtype=np.float64)
            finite = array[np.isfinite(array)]
            s = t["stats"]
            assert s["mean"] == pytest.approx(finite.mean(), rel=1e-12, abs=1e-15)
            assert s["std"] == pytest.approx(finite.std(), rel=1e-9)
            assert (s["min"], s["max"]) == (finite.min(), finite.max())
            assert s["l2"] == pytest.approx(np.linalg.norm(finite), rel=1e-12)
            assert s["zero_fraction"] == np.count_nonzero(array == 0) / array.size
            assert s["nan_count"] == int(np.isnan(array).sum()) and s["inf_count"] == 0
    table = cli("inspect", str(mlp_path), "--stats")
    assert table.returncode == 0 and "o.bias" in table.stdout and "1 NaN" in table.stdout


def test_plot_writes_pngs(mlp_path: Path, conv_path: Path, tmp_path: Path) -> None:
    result = cli("plot", str(mlp_path), "--out", str(tmp_path / "mlp"))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "mlp").iterdir())
    assert names == ["feature-importance.png", "hist-000-h.png", "hist-001-o.png", "norms.png"]
    for name in names:
        assert_nontrivial_png((tmp_path / "mlp" / name).read_bytes(), min_bytes=5000)
    result = cli("plot", str(conv_path), "--out", str(tmp_path / "conv"))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "conv").iterdir()}
    assert "filters-000-conv-weight.png" in names and "feature-importance.png" not in names
    assert not [p for p in (tmp_path / "conv").iterdir() if "weightio-tmp" in p.name]


def test_input_importance_is_normalised_abs_weights(mlp_path: Path) -> None:
    from weightio.report.plots import input_importance

    archive = weightio.load(mlp_path)
    values, layer = input_importance(archive)
    w = np.abs(np.asarray(archive.tensors["h.weight"], dtype=np.float64))
    np.testing.assert_allclose(values, w.sum(axis=0) / w.sum(), rtol=1e-12)
    assert layer == "h" and int(np.argmax(values)) == 2


def test_diff_plot_and_bad_out(mlp_path: Path, tmp_path: Path) -> None:
    archive = weightio.load(mlp_path)
    arrays = {k: np.array(v) for k, v in archive.tensors.items()}
    arrays["o.weight"] = arrays["o.weight"] * 1.5
    other = tmp_path / "other.safetensors"
    weightio.save(weightio.Archive(archive.spec, arrays), other)
    result = cli("diff", str(mlp_path), str(other), "--plot", str(tmp_path / "dp"))
    assert result.returncode == 1
    assert_nontrivial_png((tmp_path / "dp" / "diff-relative-change.png").read_bytes())
    (tmp_path / "file").write_text("x")
    bad = cli("plot", str(mlp_path), "--out", str(tmp_path / "file"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def _html_is_self_contained(text: str) -> None:
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text), "a network reference"
    assert "<script src" not in text and "<link" not in text


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (and .ci/run could not install Debian's package)")
    return found


def _render(html_path: Path, tmp_path: Path) -> tuple[str, bytes]:
    browser = _chromium()
    common = [browser, *CHROMIUM_FLAGS, "--window-size=1280,1600"]
    url = html_path.resolve().as_uri()
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'profile-1'}", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    dom = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'profile-2'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout, shot.read_bytes()


def _table(dom: str) -> tuple[dict[str, str], list[str]]:
    match = re.search(r"<table id=\"wio-table\"([^>]*)>(.*?)</table>", dom, re.S)
    assert match, "no table in the rendered page"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", match.group(2).split("<tbody>")[1], re.S)
    return attrs, rows


def test_inspect_html_renders_in_chromium(mlp_path: Path, tmp_path: Path) -> None:
    page = tmp_path / "inspect.html"
    result = cli("inspect", str(mlp_path), "--html", str(page))
    assert result.returncode == 0, result.stderr
    _html_is_self_contained(page.read_text())
    dom, shot = _render(page, tmp_path)
    attrs, rows = _table(dom)
    # The sort script ran (it sets these) and the table holds one row per tensor.
    assert attrs.get("data-sorted-by") == "index" and attrs.get("data-rows") == "4" and len(rows) == 4
    assert "h.weight" in rows[0] and "o.bias" in rows[3]
    assert dom.count("data:image/png;base64,") >= 4
    assert_nontrivial_png(shot, min_bytes=20_000, min_colours=50)


def test_diff_html_renders_in_chromium_most_changed_first(mlp_path: Path, tmp_path: Path) -> None:
    archive = weightio.load(mlp_path)
    arrays = {k: np.array(v) for k, v in archive.tensors.items()}
    arrays["h.bias"] = arrays["h.bias"] + 0.01
    arrays["o.weight"] = arrays["o.weight"] * 2.0
    other = tmp_path / "other.safetensors"
    weightio.save(weightio.Archive(archive.spec, arrays), other)
    page = tmp_path / "diff.html"
    result = cli("diff", str(mlp_path), str(other), "--html", str(page), "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["summary"]["most_changed_layer"] == "o"
    _html_is_self_contained(page.read_text())
    dom, shot = _render(page, tmp_path)
    attrs, rows = _table(dom)
    assert attrs.get("data-sorted-by") == "relative_l2" and attrs.get("data-sort-dir") == "desc"
    assert len(rows) == 4 and attrs.get("data-rows") == "4"
    # Server order is h.weight, h.bias, o.weight, o.bias; the script put the biggest change first.
    assert "o.weight" in rows[0] and "h.bias" in rows[1]
    assert_nontrivial_png(shot, min_bytes=20_000, min_colours=50)
