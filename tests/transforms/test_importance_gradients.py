"""``weightio.importance(..., gradients=True)`` / ``weightio importance --gradients``: input
elements ranked by the mean |∂f/∂x| over seeded probes, by central differences through the
numpy runtime in float64, checked against torch's autograd on the same model (``to_torch``,
in float64) and the same probes.

Tolerance: the central difference with h = 1e-6 in float64 errs by O(h²)·|f'''| ≈ 1e-12 plus
rounding O(1e-16·|f|/h) ≈ 1e-10·|f| (about 1e-9 relative to these gradients) for smooth models
(tanh); a ReLU switching within h of a probe would move one element's gradient, which these
models (tanh only) cannot meet: the tests hold 1e-7 relative, two orders above the estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

import weightio
from weightio.errors import UnsupportedLayerError
from weightio.report.plots import importance_png
from weightio.runtime.probes import probe_inputs

torch = pytest.importorskip("torch")

#: Each input feature's weights are scaled by its own factor: the ranking is clear.
FACTORS = [3.0, 0.1, 1.0, 0.5, 2.0, 0.02]


def _autograd_mean_abs(archive, seed: int, samples: int) -> np.ndarray:
    """torch's gradient of the top-class logit (of the unperturbed probe) per probe, float64."""
    module = weightio.to_torch(archive).double()
    x = torch.from_numpy(probe_inputs(archive.spec, seed=seed, samples=samples)[0]).double()
    x.requires_grad_(True)
    y = module(x)
    y[torch.arange(samples), y.argmax(dim=1)].sum().backward()  # probes are independent rows
    return x.grad.abs().mean(dim=0).numpy().reshape(-1)


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.tensor(FACTORS))
    return weightio.read(model, example_input=torch.zeros(1, 6))


def test_gradient_ranking_and_values_match_torch_autograd(mlp) -> None:
    found = weightio.importance(mlp, gradients=True, seed=4, samples=16)
    reference = _autograd_mean_abs(mlp, seed=4, samples=16)
    got = np.asarray(found.mean_abs_gradients)
    assert np.max(np.abs(got - reference)) <= 1e-7 * np.max(reference)
    order = [label for _, label, _ in found.ranked()]
    assert order == [f"feature {j}" for j in np.argsort(-reference, kind="stable")]
    assert order == ["feature 0", "feature 4", "feature 2", "feature 3", "feature 1", "feature 5"]
    assert abs(sum(found.scores) - 1.0) < 1e-12 and found.method == "gradients"
    assert "top class" in found.objective and "seed 4" in found.objective


def test_gradients_of_a_cnn_give_a_heat_map_and_match_autograd(cli, tmp_path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10),
    ).eval()
    archive = weightio.read(model, example_input=torch.zeros(1, 1, 8, 8))
    found = weightio.importance(archive, gradients=True)
    assert found.image == (1, 8, 8, "channels_first") and len(found.scores) == 64
    reference = _autograd_mean_abs(archive, seed=0, samples=8)
    assert np.max(np.abs(np.asarray(found.mean_abs_gradients) - reference)) <= 1e-7 * np.max(reference)
    assert importance_png(found).startswith(b"\x89PNG")
    source = tmp_path / "cnn.safetensors"
    weightio.save(archive, source)
    done = cli("importance", source, "--gradients", "--plot", tmp_path / "plots", "--json", "--top", "5")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["method"] == "gradients" and len(data["ranking"]) == 5
    best = int(np.argmax(reference))
    assert data["ranking"][0]["input"] == f"pixel ({best // 8}, {best % 8})"
    assert (tmp_path / "plots" / "importance.png").stat().st_size > 1000
    done = cli("importance", source, "--gradients", "--top", "3")
    assert "by probe gradients" in done.stdout and "rank" in done.stdout


def test_gradients_refuse_a_weights_only_archive_and_integer_inputs() -> None:
    with pytest.raises(UnsupportedLayerError, match="weights only"):
        weightio.importance({"fc.weight": torch.ones(2, 3)}, gradients=True)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    archive = weightio.read(model, example_input=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(UnsupportedLayerError, match="one float input"):
        weightio.importance(archive, gradients=True)
