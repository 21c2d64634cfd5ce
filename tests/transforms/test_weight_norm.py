"""``weightio.weight_norm`` / ``weightio fold --to weight-norm``: dense and conv weights stored
as torch's weight norm (``g``, ``v``; encoding scheme ``weight_norm``, docs/format.md), built by
the torch writer with ``parametrizations.weight_norm``, recombined by the runtime and the Keras
writer, read back from a live torch module, and made plain again by ``fold``."""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from tests.conftest import assert_close
from weightio.errors import UnsupportedLayerError
from weightio.runtime.probes import probe_inputs

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4),
    ).eval()


@pytest.fixture(scope="module")
def plain(model):
    return weightio.read(model, example_input=torch.zeros(1, 2, 8, 8))


def _outputs(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_weight_norm_form_builds_torch_parametrizations_matching_the_plain_model(model, plain, tmp_path) -> None:
    result = weightio.weight_norm(plain, exclude=["6"])
    assert [row["layer"] for row in result.layers] == ["0", "4"]
    assert result.measurement.worst_rel < 1e-6  # the same function up to one rounding of w
    assert any(line.startswith("weight_norm:") for line in result.archive.spec.provenance.transforms)
    path = tmp_path / "wn.safetensors"
    weightio.save(result.archive, path)
    archive = weightio.load(path, verify=True)  # g has a digest of its own
    encoding = archive.spec.layer("0").weight.encoding
    assert encoding.scheme == "weight_norm" and encoding.axis == 0 and encoding.scale.key == "0.weight.g"
    g, v = np.asarray(archive.stored["0.weight.g"]), np.asarray(archive.stored["0.weight"])
    w = model[0].weight.detach().numpy()
    assert np.array_equal(v, w)  # v starts as w, as torch's weight_norm does
    assert_close(g, np.sqrt((w.astype(np.float64) ** 2).sum(axis=(1, 2, 3))), tol=1e-7)

    module = weightio.to_torch(archive)
    state = module.state_dict()
    assert {"0.parametrizations.weight.original0", "0.parametrizations.weight.original1",
            "4.parametrizations.weight.original1", "6.weight"} <= set(state)
    assert "0.weight" not in state and tuple(state["0.parametrizations.weight.original0"].shape) == (6, 1, 1, 1)
    assert torch.nn.utils.parametrize.is_parametrized(module[0], "weight")
    assert not torch.nn.utils.parametrize.is_parametrized(module[6])
    x = probe_inputs(archive.spec, seed=2, samples=16)[0]
    expected = _outputs(model, x)
    assert_close(expected, _outputs(module, x))
    assert_close(expected, weightio.run(archive, x))

    # read back live: the parametrized modules are dense/conv layers in weight-norm form again
    back = weightio.read(module, example_input=torch.zeros(1, 2, 8, 8))
    assert back.spec.layer("4").kind == "dense" and back.spec.layer("4").weight.encoding.scheme == "weight_norm"
    assert np.array_equal(np.asarray(back.stored["4.weight.g"]), np.asarray(archive.stored["4.weight.g"]))
    assert_close(expected, weightio.run(back, x))


def test_fold_makes_weight_norm_plain_again_equal_to_the_original(plain, cli, tmp_path) -> None:
    source = tmp_path / "plain.safetensors"
    weightio.save(plain, source)
    normed, folded = tmp_path / "wn.safetensors", tmp_path / "folded.safetensors"
    done = cli("fold", source, normed, "--to", "weight-norm", "--include", "dense")
    assert done.returncode == 0, done.stderr
    assert "weight_norm: 2 dense/conv weight(s)" in done.stdout
    assert not weightio.load(normed).spec.layer("0").weight.encoding  # --include dense: no conv
    done = cli("fold", normed, folded)
    assert done.returncode == 0, done.stderr
    assert "2 weight norm(s) made plain" in done.stdout
    result = weightio.load(folded, verify=True)
    assert not result.spec.encoded and sorted(result.tensors) == sorted(plain.tensors)
    for key in plain.tensors:
        assert_close(np.asarray(plain.tensors[key]), np.asarray(result.tensors[key]), tol=1e-6)


def test_weight_norm_pt2_program_runs_and_reads_back_in_weight_norm_form(model, plain, tmp_path) -> None:
    archive = weightio.weight_norm(plain).archive
    source = tmp_path / "wn.safetensors"
    weightio.save(archive, source)
    x = probe_inputs(archive.spec, seed=0, samples=8)[0]
    weightio.convert(source, tmp_path / "wn.pt2")  # verified against the runtime
    program = torch.export.load(tmp_path / "wn.pt2")
    assert any(key.endswith("parametrizations.weight.original0") for key in program.state_dict)
    assert_close(_outputs(model, x), _outputs(program.module(), x))
    back = weightio.read(tmp_path / "wn.pt2")  # aten._weight_norm read as the parametrization
    assert back.spec.layer("4").weight.encoding.scheme == "weight_norm"
    saved = weightio.load(source)
    assert sorted(back.stored) == sorted(saved.stored)
    for key in saved.stored:
        assert np.array_equal(np.asarray(back.stored[key]), np.asarray(saved.stored[key])), key


@pytest.mark.slow
def test_weight_norm_converts_to_keras_recombined(model, plain, tmp_path) -> None:
    keras = pytest.importorskip("keras")
    archive = weightio.weight_norm(plain).archive
    source = tmp_path / "wn.safetensors"
    weightio.save(archive, source)
    x = probe_inputs(archive.spec, seed=0, samples=8)[0]
    weightio.convert(source, tmp_path / "wn.keras")  # verified against the runtime
    restored = keras.saving.load_model(tmp_path / "wn.keras")
    assert_close(_outputs(model, x), np.asarray(restored.predict(x.transpose(0, 2, 3, 1), verbose=0)))


def test_weight_norm_refusals(plain, cli, tmp_path) -> None:
    with pytest.raises(UnsupportedLayerError, match="weights only"):
        weightio.weight_norm(weightio.read({"fc.weight": torch.ones(2, 3)}))
    source = tmp_path / "plain.safetensors"
    weightio.save(plain, source)
    done = cli("fold", source, tmp_path / "out.safetensors", "--to", "spectral")
    assert done.returncode != 0 and "--to must be plain or weight-norm" in done.stderr
    done = cli("fold", source, tmp_path / "out.safetensors", "--include", "dense")
    assert done.returncode != 0 and "--to weight-norm" in done.stderr
