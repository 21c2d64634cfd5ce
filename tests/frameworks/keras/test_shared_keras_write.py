"""The Keras writer keeps shared weights: a spec layer called again (a torch module reused, a
Keras layer's ``<layer>__call<k>``) becomes one Keras layer object called at each place, with
one set of variables stored once in ``model.weights.h5``; a tie Keras cannot hold (an embedding
tied to the output projection) is copied with ``UntiedWeightsWarning``. Both back ends (live
``to_keras`` and ``write_keras_file``), compared with torch and ``weightio.run``.
"""

from __future__ import annotations

import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
from weightio.frameworks.keras.files.writer import keras_model_plan, write_keras_file  # noqa: E402
from weightio.frameworks.keras.write.sharing import UntiedWeightsWarning  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "torch"))
from test_weight_sharing import IDS, TiedLM  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

L = keras.layers


class Twice(torch.nn.Module):
    """One Linear called twice: ``fc(relu(fc(x)))``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.fc(x)))


def _stored_arrays(path: Path) -> list[str]:
    """Every dataset in the ``.keras`` file's ``model.weights.h5``."""
    found: list[str] = []
    with zipfile.ZipFile(path) as zf, zf.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as h5:
            h5.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def _calls(model: Any) -> dict[str, int]:
    """Each layer's number of calls (inbound nodes) in the model."""
    return {layer.name: len(layer._inbound_nodes) for layer in model.layers}


def _both_back_ends(archive: Any, tmp_path: Path) -> list[Any]:
    """The live model and the one ``keras.saving.load_model`` opens from the written file."""
    path = write_keras_file(archive, tmp_path / "model.keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    plan = keras_model_plan(archive)
    # the file lists the layers holding variables in Keras's own order (which names their groups)
    assert [layer.name for layer in loaded.layers if layer.weights] == [
        layer.name for layer in plan.saved_layers() if layer.weights]
    return [weightio.to_keras(archive), loaded]


def test_a_linear_called_twice_is_one_keras_layer_called_twice(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Twice().eval()
    x = np.random.default_rng(1).standard_normal((3, 5)).astype("float32")
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    archive = weightio.read(module, example_input=torch.from_numpy(x))
    assert archive.spec.shared_tensors() == {"fc.weight": ["fc.weight", "fc_1.weight"],
                                             "fc.bias": ["fc.bias", "fc_1.bias"]}
    assert_close(reference, weightio.run(archive, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntiedWeightsWarning)  # nothing is untied here
        models = _both_back_ends(archive, tmp_path)
    for model in models:
        assert _calls(model)["fc"] == 2 and "fc_1" not in _calls(model)
        assert len(model.weights) == 2 and model.count_params() == 5 * 5 + 5
        assert_close(reference, model.predict(x, verbose=0))
    assert sorted(_stored_arrays(tmp_path / "model.keras")) == ["layers/dense/vars/0", "layers/dense/vars/1"]
    # Read back: the same sharing (the same keys), the second call now named as Keras names it.
    again = weightio.read(tmp_path / "model.keras")
    assert again.spec.shared_tensors() == {"fc.weight": ["fc.weight", "fc__call1.weight"],
                                           "fc.bias": ["fc.bias", "fc__call1.bias"]}
    assert len(again.tensors) == len(archive.tensors)
    assert_close(reference, weightio.run(again, x))


def test_an_embedding_tied_to_the_head_is_copied_with_a_named_warning(tmp_path: Path) -> None:
    """Keras has no layer holding an embedding and the projection by its transpose as one
    variable: the head gets a copy and the warning names the tensor; ``fc``, called twice,
    stays one layer."""
    torch.manual_seed(3)
    module = TiedLM().eval()
    with torch.no_grad():
        reference = module(IDS).numpy()
    archive = weightio.read(module, example_input=IDS)
    for back_end in ("live", "file"):
        with pytest.warns(UntiedWeightsWarning, match=r"'emb\.weight' is shared by layers emb, head"):
            model = (weightio.to_keras(archive) if back_end == "live" else
                     keras.saving.load_model(write_keras_file(archive, tmp_path / "lm.keras")))
        assert _calls(model)["fc"] == 2
        assert len(model.weights) == 4  # emb, fc kernel and bias, head's copy of emb (transposed)
        np.testing.assert_array_equal(model.get_layer("head").get_weights()[0],
                                      model.get_layer("emb").get_weights()[0].T)
        assert_close(reference, model.predict(IDS.numpy(), verbose=0))
    assert_close(reference, weightio.run(archive, IDS.numpy()))
    again = weightio.read(tmp_path / "lm.keras")
    assert sorted(again.spec.shared_tensors()) == ["fc.bias", "fc.weight"]  # the tie is not kept
    assert len(again.tensors) == len(archive.tensors) + 1


def _siamese() -> Any:
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    enc = L.Dense(4, activation="tanh", name="enc")
    d = L.Dense(6, name="d")
    return keras.Model([a, b], L.Concatenate(name="cat")([enc(d(d(a))), enc(b)]))


def _conv_twice() -> Any:
    x = keras.Input((8, 8, 3))
    conv = L.Conv2D(3, 3, padding="same", activation="relu", name="conv")
    return keras.Model(x, conv(conv(x)))


@pytest.mark.parametrize("build", [_siamese, _conv_twice], ids=["siamese", "conv_twice"])
def test_a_keras_layer_called_twice_comes_back_with_the_same_structure(build: Any, tmp_path: Path) -> None:
    model = build()
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.standard_normal(tuple(variable.shape)).astype("float32"))
    x = [rng.standard_normal((3, *i.shape[1:])).astype("float32") for i in model.inputs]
    feed = x if len(x) > 1 else x[0]
    reference = model.predict(feed, verbose=0)
    archive = weightio.read(model)
    assert_close(reference, weightio.run(archive, feed, layout="source"))
    for back in _both_back_ends(archive, tmp_path):
        assert _calls(back) == _calls(model)
        assert len(back.weights) == len(model.weights) and back.count_params() == model.count_params()
        assert_close(reference, back.predict(feed, verbose=0))
        again = weightio.read(back)
        assert again.spec.shared_tensors() == archive.spec.shared_tensors()
        assert sorted(again.tensors) == sorted(archive.tensors)
    assert len(_stored_arrays(tmp_path / "model.keras")) == len(model.weights)
    stored = weightio.read(tmp_path / "model.keras")
    assert stored.spec.shared_tensors() == archive.spec.shared_tensors()
