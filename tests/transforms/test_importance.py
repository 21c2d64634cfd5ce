"""``weightio.importance`` / ``weightio importance``: the first layer's absolute weights as shares
per input feature (pixels of a flattened image, in the flatten's order), per input channel of a
conv, for torch, Keras and weights-only archives; a ranked table and a picture."""

from __future__ import annotations

import json

import numpy as np
import pytest

import weightio
from weightio.errors import UnsupportedLayerError

torch = pytest.importorskip("torch")


def test_dense_on_a_flattened_image_gives_a_pixel_heat_map(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
    )
    with torch.no_grad():
        model[1].weight[:, 9] *= 50  # pixel (1, 1) is what the model listens to
    found = weightio.importance(model, example_input=torch.zeros(1, 8, 8))
    w = np.abs(model[1].weight.detach().numpy().astype("f8"))
    assert np.allclose(found.scores, w.sum(0) / w.sum()) and abs(sum(found.scores) - 1) < 1e-9
    assert found.image == (1, 8, 8, "channels_first") and found.ranked(1)[0][1] == "pixel (1, 1)"
    pytest.importorskip("matplotlib")
    from weightio.report.plots import importance_png

    assert importance_png(found).startswith(b"\x89PNG")


def test_conv_importance_is_per_input_channel() -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight[:, 2] *= 10
    found = weightio.importance(
        torch.nn.Sequential(conv, torch.nn.ReLU()), example_input=torch.zeros(1, 3, 6, 6)
    )
    w = np.abs(conv.weight.detach().numpy().astype("f8"))
    assert np.allclose(found.scores, w.sum((0, 2, 3)) / w.sum())
    assert found.kind == "conv" and [label for _, label, _ in found.ranked()][0] == "channel 2"
    assert np.asarray(found.kernel_maps[2]).shape == (3, 3)


def test_keras_flatten_order_names_the_right_pixel_and_channel() -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential(
        [keras.Input((4, 4, 2)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    kernel = np.random.default_rng(0).standard_normal((32, 3)).astype("f4") * 0.01
    kernel[(2 * 4 + 3) * 2 + 1] = 5.0  # row 2, column 3, channel 1 in Keras's (H, W, C) order
    model.layers[-1].set_weights([kernel, np.zeros(3, "f4")])
    found = weightio.importance(model)
    assert found.ranked(1)[0][1] == "pixel (2, 3) ch 1"
    assert found.image == (2, 4, 4, "channels_last")


def test_weights_only_archives_and_no_weights(tmp_path) -> None:
    torch.save({"enc.weight": torch.eye(4)[:2] * 3, "enc.bias": torch.zeros(2)}, tmp_path / "sd.pt")
    found = weightio.importance(tmp_path / "sd.pt")
    assert found.scores == [0.5, 0.5, 0.0, 0.0] and found.labels[0] == "feature 0"
    with pytest.raises(UnsupportedLayerError, match="no dense or conv layer"):
        weightio.importance(torch.nn.Sequential(torch.nn.ReLU()), example_input=torch.zeros(1, 3))


def test_cli_importance_prints_a_ranked_table_and_draws(tmp_path, cli) -> None:
    pytest.importorskip("matplotlib")
    torch.manual_seed(2)
    weightio.convert(torch.nn.Sequential(torch.nn.Linear(6, 2)), tmp_path / "m.safetensors")
    done = cli(
        "importance",
        str(tmp_path / "m.safetensors"),
        "--top",
        "3",
        "--plot",
        str(tmp_path / "plots"),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("importance of each input feature to dense layer '0'")
    assert lines[2].lstrip().startswith("1  feature") and lines[-1] == "  … 3 more"
    assert (tmp_path / "plots" / "importance.png").read_bytes().startswith(b"\x89PNG")
    done = cli("importance", str(tmp_path / "m.safetensors"), "--json")
    assert [row["rank"] for row in json.loads(done.stdout)["ranking"]] == list(range(1, 7))
