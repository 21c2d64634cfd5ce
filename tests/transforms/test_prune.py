"""``weightio.prune`` / ``weightio prune``: magnitude pruning per layer and global to an exact
sparsity; structured pruning that shrinks conv filters / dense units and what reads them (batch
norm, the next conv, through a flatten in either order the next dense), so the model converted
to torch and Keras is built smaller and computes the outputs weightio reports."""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from tests.conftest import assert_close
from weightio.errors import InvalidInputError, SpecValidationError
from weightio.runtime.probes import probe_inputs

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 2 * 2, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 10),
    ).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return weightio.read(model, example_input=torch.zeros(1, 1, 8, 8))


def _weights(archive, layer):
    return np.asarray(archive.tensor(layer, "weight"))


def test_unstructured_per_layer_reaches_the_sparsity_in_every_layer(cnn) -> None:
    result = weightio.prune(cnn, 0.5)
    for name in ("0", "3", "7", "9"):
        w, orig = _weights(result.archive, name), _weights(cnn, name)
        assert np.count_nonzero(w == 0) == round(0.5 * w.size)
        kept = w != 0
        assert np.abs(orig[kept]).min() >= np.abs(orig[~kept]).max()  # the smallest went
        assert np.array_equal(w[kept], orig[kept])
    assert np.array_equal(
        np.asarray(result.archive.tensor("0", "bias")), np.asarray(cnn.tensor("0", "bias"))
    )
    assert [row["sparsity"] for row in result.layers] == [0.5] * 4
    assert result.parameters_after == result.parameters_before
    m = result.measurement
    x = probe_inputs(cnn.spec)[0]
    worst = np.abs(weightio.run(result.archive, x).astype("f8") - weightio.run(cnn, x)).max()
    assert m.worst_abs == pytest.approx(worst)


def test_global_scope_ranks_every_selected_weight_together(cnn) -> None:
    result = weightio.prune(cnn, 0.6, scope="global", exclude=["9"])
    pruned = [_weights(result.archive, n) for n in ("0", "3", "7")]
    original = [_weights(cnn, n) for n in ("0", "3", "7")]
    total = sum(w.size for w in pruned)
    assert sum(np.count_nonzero(w == 0) for w in pruned) == round(0.6 * total)
    threshold = max(np.abs(o[w == 0]).max() for o, w in zip(original, pruned))
    assert all(np.abs(o[w != 0]).min() >= threshold for o, w in zip(original, pruned))
    assert np.array_equal(_weights(result.archive, "9"), _weights(cnn, "9"))  # excluded
    assert len({round(row["sparsity"], 3) for row in result.layers}) > 1  # not the same per layer


def test_include_by_kind_and_unknown_patterns(cnn) -> None:
    result = weightio.prune(cnn, 0.5, include=["dense"])
    assert [row["layer"] for row in result.layers] == ["7", "9"]
    assert np.array_equal(_weights(result.archive, "0"), _weights(cnn, "0"))
    with pytest.raises(SpecValidationError, match="'nope' names no layer"):
        weightio.prune(cnn, 0.5, include=["nope"])
    with pytest.raises(InvalidInputError, match="sparsity must be"):
        weightio.prune(cnn, 1.0)
    with pytest.raises(InvalidInputError, match="structured pruning is per layer"):
        weightio.prune(cnn, 0.5, structured=True, scope="global")


def test_structured_pruning_shrinks_the_model_and_torch_builds_it_smaller(cnn) -> None:
    result = weightio.prune(cnn, 0.25, structured=True)
    spec = result.archive.spec
    assert [(r["layer"], r["units_before"], r["units_after"]) for r in result.layers] == [
        ("0", 8, 6),
        ("3", 8, 6),
        ("7", 16, 12),
    ]
    assert spec.layer("1").num_features == 6 and spec.layer("3").in_channels == 6
    assert spec.layer("7").in_features == 6 * 2 * 2 and spec.layer("9").in_features == 12
    assert (
        result.parameters_after < result.parameters_before
        and result.size_after < result.size_before
    )
    assert any("kept 9 whole: its output reaches the model output" in n for n in result.notes)
    rebuilt = weightio.to_torch(result.archive)
    assert rebuilt[0].weight.shape == (6, 1, 3, 3) and rebuilt[7].weight.shape == (12, 24)
    assert (
        sum(p.numel() for p in rebuilt.parameters()) + 12 == result.parameters_after
    )  # + BN buffers
    x = probe_inputs(cnn.spec)[0]
    with torch.no_grad():
        assert_close(weightio.run(result.archive, x), rebuilt(torch.from_numpy(x)).numpy())
    # the kept filters are those with the largest L1 norms
    norms = np.abs(_weights(cnn, "0")).reshape(8, -1).sum(1)
    kept = np.sort(np.argsort(norms)[2:])
    assert np.array_equal(_weights(result.archive, "0"), _weights(cnn, "0")[kept])
    assert np.array_equal(
        _weights(result.archive, "3")[:, :, 0, 0],
        _weights(cnn, "3")[:, kept, 0, 0][
            np.sort(np.argsort(np.abs(_weights(cnn, "3")).reshape(8, -1).sum(1))[2:])
        ],
    )


def test_structured_pruning_of_a_keras_model_runs_in_keras_and_torch() -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    result = weightio.prune(model, 0.5, structured=True, norm="l2")
    assert [(r["units_before"], r["units_after"]) for r in result.layers] == [
        (8, 4),
        (6, 3),
        (12, 6),
    ]
    x = np.random.default_rng(4).standard_normal((8, 8, 8, 1)).astype("f4")
    expected = weightio.run(result.archive, x, layout="source")
    rebuilt = weightio.to_keras(result.archive)
    assert rebuilt.layers[0].kernel.shape == (3, 3, 1, 4)
    assert_close(expected, np.asarray(rebuilt(x)))
    module = weightio.to_torch(result.archive)
    with torch.no_grad():
        assert_close(expected, module(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy())


def test_cli_prune_reports_every_layer(cnn, tmp_path, cli) -> None:
    weightio.save(cnn, tmp_path / "m.safetensors")
    out = tmp_path / "p.safetensors"
    done = cli(
        "prune",
        str(tmp_path / "m.safetensors"),
        str(out),
        "--sparsity",
        "0.25",
        "--structured",
        "--exclude",
        "7",
    )
    assert done.returncode == 0, done.stderr
    assert "  0 (conv): sparsity 25.0%, parameters 80 -> 60, units 8 -> 6" in done.stdout
    assert "worst abs output change" in done.stdout and out.exists()
    loaded = weightio.load(out, verify=True)
    assert loaded.spec.layer("7").in_features == 24
    assert any(
        line.startswith("prune: structured (L1 norm)") for line in loaded.spec.provenance.transforms
    )
    done = cli(
        "prune",
        str(tmp_path / "m.safetensors"),
        str(out),
        "--sparsity",
        "0.5",
        "--scope",
        "everywhere",
    )
    assert (
        done.returncode == 2 and done.stderr.count("\n") == 1 and "--scope must be" in done.stderr
    )


def test_weights_only_state_dicts_prune_unstructured_and_say_nothing_was_compared(tmp_path) -> None:
    torch.manual_seed(5)
    torch.save(
        {"a.weight": torch.randn(4, 6), "a.bias": torch.randn(4), "b.weight": torch.randn(2, 4)},
        tmp_path / "sd.pt",
    )
    result = weightio.prune(tmp_path / "sd.pt", 0.5)
    assert [(row["layer"], row["sparsity"]) for row in result.layers] == [("a", 0.5), ("b", 0.5)]
    assert np.count_nonzero(np.asarray(result.archive.tensors["a.bias"])) == 4  # biases are kept
    assert "no outputs compared" in result.summary()[-1]
    with pytest.raises(SpecValidationError, match="structured pruning needs the architecture"):
        weightio.prune(tmp_path / "sd.pt", 0.5, structured=True)
