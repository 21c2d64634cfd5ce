"""``weightio.fold`` / ``weightio fold``: batch norm folded into the conv/dense before it (≤ 1e-5
relative, on a torch-read and a Keras-read model, perturbed statistics), dropout and identity
removed, torch weight norm (both APIs) made plain weights, ``--max-change`` refusing."""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from tests.conftest import assert_close
from weightio.errors import VerificationError

torch = pytest.importorskip("torch")


def _perturb(bn) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.3, 3)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)


@pytest.fixture(scope="module")
def torch_cnn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, bias=False),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Conv2d(6, 4, 3),
        torch.nn.BatchNorm2d(4, eps=1e-3),
        torch.nn.Identity(),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 10),
        torch.nn.BatchNorm1d(10),
        torch.nn.Linear(10, 3),
    ).eval()
    for bn in (model[1], model[5], model[10]):
        _perturb(bn)
    return model


def test_torch_batch_norm_folds_within_1e5_relative(torch_cnn, tmp_path) -> None:
    archive = weightio.read(torch_cnn, example_input=torch.zeros(1, 1, 8, 8))
    result = weightio.fold(archive)
    kinds = [layer.kind for layer in result.archive.spec.layers]
    assert kinds == ["conv", "activation", "conv", "activation", "flatten", "dense", "dense"]
    assert result.parameters_after < result.parameters_before
    assert result.measurement.worst_rel <= 1e-5 and result.measurement.top1_agreement == 1.0
    x = np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype("f4")
    expected = torch_cnn(torch.from_numpy(x)).detach().numpy()
    weightio.save(result.archive, tmp_path / "folded.safetensors")
    folded = weightio.load(tmp_path / "folded.safetensors", verify=True)
    assert_close(expected, weightio.run(folded, x))
    rebuilt = weightio.to_torch(folded)
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d | torch.nn.Dropout) for m in rebuilt.modules()
    )
    with torch.no_grad():
        assert_close(expected, rebuilt(torch.from_numpy(x)).numpy())
    lines = folded.spec.provenance.transforms
    assert "fold: 2 dropout/identity layer(s) removed, 3 batch norm(s) folded" in lines
    assert any(line.startswith("fold: measured on 8 seeded probes") for line in lines)


def test_batch_norm_after_an_activation_or_a_branch_stays(tmp_path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.BatchNorm1d(5)
    ).eval()
    _perturb(model[2])
    result = weightio.fold(model)
    assert [layer.kind for layer in result.archive.spec.layers] == [
        "dense",
        "activation",
        "batch_norm",
    ]
    assert result.measurement.worst_abs == 0.0 and result.notes == ["nothing to fold"]


def test_keras_batch_norm_folds_within_1e5_relative() -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(5, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(7),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, n),
                    rng.uniform(-1, 1, n),
                    rng.uniform(-1, 1, n),
                    rng.uniform(0.3, 3, n),
                ]
            )
    result = weightio.fold(model)
    assert [layer.kind for layer in result.archive.spec.layers] == [
        "conv",
        "activation",
        "flatten",
        "dense",
        "dense",
    ]
    x = rng.standard_normal((16, 8, 8, 2)).astype("f4")
    expected = np.asarray(model(x, training=False))
    assert_close(expected, weightio.run(result.archive, x, layout="source"))
    rebuilt = weightio.to_keras(result.archive)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in rebuilt.layers)
    assert_close(expected, np.asarray(rebuilt(x, training=False)))
    assert result.measurement.worst_rel <= 1e-5


def test_weight_norm_state_dicts_become_plain_weights(tmp_path) -> None:
    from torch.nn.utils import parametrizations

    torch.manual_seed(2)
    normed = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    normed[0] = parametrizations.weight_norm(normed[0])
    with pytest.warns(FutureWarning):
        normed[2] = torch.nn.utils.weight_norm(normed[2])
    with torch.no_grad():  # magnitudes that differ from ||v||, so the fold has work to do
        normed[0].parametrizations.weight.original0.uniform_(0.5, 2)
        normed[2].weight_g.uniform_(0.5, 2)
    torch.save(normed.state_dict(), tmp_path / "normed.pt")
    result = weightio.fold(tmp_path / "normed.pt")
    assert not result.measurement.compared and "no outputs compared" in result.summary()[-1]
    plain = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    weightio.save(result.archive, tmp_path / "plain.safetensors")
    weightio.load_into(weightio.load(tmp_path / "plain.safetensors"), plain)
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert_close(normed(x).numpy(), plain(x).numpy())
        assert torch.allclose(plain[0].weight, normed[0].weight, atol=1e-7)
    assert sorted(result.archive.tensors) == ["0.bias", "0.weight", "2.bias", "2.weight"]


def test_max_change_refuses_and_writes_nothing(torch_cnn, tmp_path, cli) -> None:
    weightio.save(
        weightio.read(torch_cnn, example_input=torch.zeros(1, 1, 8, 8)), tmp_path / "m.safetensors"
    )
    with pytest.raises(VerificationError, match="more than max_change=0"):
        weightio.fold(tmp_path / "m.safetensors", max_change=0.0)
    target = tmp_path / "f.safetensors"
    done = cli("fold", str(tmp_path / "m.safetensors"), str(target), "--max-change", "0")
    assert done.returncode == 1, done.stderr
    assert (
        done.stderr.count("\n") == 1
        and "--max-change 0" in done.stderr
        and "nothing was written" in done.stderr
    )
    assert not target.exists() and list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]
    done = cli("fold", str(tmp_path / "m.safetensors"), str(target), "--max-change", "1e-4")
    assert done.returncode == 0, done.stderr
    assert "3 batch norm(s) folded" in done.stdout and target.exists()
