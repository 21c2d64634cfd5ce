"""Keras → PyTorch → Keras gives the nested models back (issue 14, deliverable 3).

``to_torch`` builds each ``outer/inner`` group as a ``NestedModel`` submodule; reading that
module, or the ``.pt2`` written from it, names the layers ``outer/inner`` again, so
``to_keras`` rebuilds the user's nested models. Every layer holding weights keeps its group
and name; outputs of Keras, the torch module, the rebuilt Keras model and ``weightio.run``
agree. A user's own torch containers keep their dotted names.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close, keras_model_classes  # noqa: E402
from test_keras_write import run_without_keras  # noqa: E402
from test_nested_models import MODELS, _randomized  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import MalformedFileError  # noqa: E402
from weightio.frameworks.torch.nesting import EXTRA_FILE  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

L = keras.layers


def _groups(model: Any, prefix: str = "") -> dict[str, set[str]]:
    """Each nested model's path (``middle/core``) -> the names of its layers holding weights."""
    found: dict[str, set[str]] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            path = f"{prefix}{layer.name}"
            found[path] = {sub.name for sub in layer.layers
                           if sub.weights and not isinstance(sub, keras.Model)}
            found.update(_groups(layer, f"{path}/"))
    return found


def dotted_group() -> Any:
    """A nested model whose name holds a '.', which torch cannot keep in an attribute."""
    inner = keras.Sequential([keras.Input((4,)), L.Dense(5, activation="relu", name="d1"),
                              L.Dense(3, name="d2")], name="core.v1")
    x = keras.Input((4,), name="x")
    return keras.Model(x, L.Dense(2, name="head")(inner(x)), name="outer")


def clashing_groups() -> Any:
    """Names that clean to one torch attribute: nested models ``a.b`` and ``a_b`` next to a
    layer ``a_b_1``, each model with a ``relu6`` (``aten.hardtanh(x, 0, 6)`` in a ``.pt2``).
    """
    def block(name: str) -> Any:
        return keras.Sequential([keras.Input((4,)), L.Dense(4, activation="relu6", name="d")],
                                name=name)

    x = keras.Input((4,), name="x")
    y = block("a_b")(block("a.b")(x))
    return keras.Model(x, L.Dense(2, name="a_b_1")(y), name="outer")


CASES = {**{name: build for name, (build, _) in MODELS.items()}, "dotted_group": dotted_group,
         "clashing_groups": clashing_groups}
SHAPES = {**{name: shape for name, (_, shape) in MODELS.items()}, "dotted_group": (4,),
          "clashing_groups": (4,)}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, np.ndarray, Any, Path]]:
    """Per case: the Keras model, an input, its archive's torch module, and that module's ``.pt2``."""
    folder = tmp_path_factory.mktemp("through_torch")
    result = {}
    for name, build in CASES.items():
        model = _randomized(build())
        x = np.random.default_rng(1).standard_normal((3, *SHAPES[name])).astype("float32")
        archive = weightio.read(model)
        path = folder / f"{name}.pt2"
        weightio.convert(archive, path)
        result[name] = (model, x, weightio.to_torch(archive), path)
    return result


def _channels_first(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1) if x.ndim == 4 else x


@pytest.mark.parametrize("carrier", ["module", "pt2"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_nesting_survives_a_torch_round_trip(name: str, carrier: str, made: dict) -> None:
    model, x, module, path = made[name]
    reference = np.asarray(model(x, training=False))
    if carrier == "module":
        archive = weightio.read(module, example_input=torch.from_numpy(_channels_first(x)))
    else:
        archive = weightio.read(path)
    assert any("/" in layer.name for layer in archive.spec.layers)
    back = weightio.to_keras(archive, nested=True)
    want, got = _groups(model), _groups(back)
    assert set(got) == set(want)  # the same nested models, by name, at every depth
    for group, layers in want.items():
        assert layers <= got[group], (group, layers, got[group])
    assert keras_model_classes(back) == keras_model_classes(model)  # a Sequential comes back a Sequential
    assert_close(reference, np.asarray(back(x, training=False)))
    assert_close(reference, weightio.run(archive, _channels_first(x)))
    with torch.no_grad():
        out = module(torch.from_numpy(_channels_first(x))).numpy()
    assert_close(reference, out)


def test_the_group_module_keeps_the_spec_name_and_the_state_dict_keys(made: dict) -> None:
    _, _, module, _ = made["dotted_group"]
    group = module.get_submodule("core_v1")
    assert type(group).__name__ == "NestedModel" and group.weightio_name == "core.v1"
    assert group.weightio_class == "Sequential" and module.weightio_class == "Functional"
    assert {"core_v1.d1.weight", "core_v1.d2.bias", "head.weight"} <= set(module.state_dict())


def test_a_users_own_containers_keep_their_dotted_names() -> None:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: Any) -> Any:
            return torch.relu(self.fc(x))

    model = torch.nn.Sequential(Block(), torch.nn.Linear(3, 2)).eval()
    archive = weightio.read(model, example_input=torch.randn(2, 4))
    assert not any("/" in layer.name for layer in archive.spec.layers)
    assert "0.fc" in [layer.name for layer in archive.spec.layers]


def test_a_users_container_around_a_built_module_keeps_its_dotted_path(made: dict) -> None:
    """``nn.Sequential(to_torch(archive), head)``: the groups read back under ``0.``, the
    user's own path, and the numbers are the wrapped module's."""
    model, x, module, _ = made["dotted_group"]
    wrapped = torch.nn.Sequential(module, torch.nn.Tanh()).eval()
    archive = weightio.read(wrapped, example_input=torch.from_numpy(x))
    names = {layer.name for layer in archive.spec.layers}
    assert {"0.core.v1/d1", "0.core.v1/d2"} <= names, names
    reference = np.tanh(np.asarray(model(x, training=False)))
    assert_close(reference, weightio.run(archive, x))
    assert_close(reference, np.asarray(weightio.to_keras(archive)(x, training=False)))


def test_relu6_in_a_pt2_reads_as_relu6(tmp_path: Path) -> None:
    """``torch.export`` records ``nn.ReLU6`` as ``aten.hardtanh(x, 0.0, 6.0)``."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU6()).eval()
    program = torch.export.export(model, (torch.randn(2, 4),))
    torch.export.save(program, tmp_path / "relu6.pt2")
    archive = weightio.read(tmp_path / "relu6.pt2")
    assert "relu6" in repr(archive.spec.layers)
    x = 4 * np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    with torch.no_grad():
        assert_close(model(torch.from_numpy(x)).numpy(), weightio.run(archive, x))


def _with_member(path: Path, target: Path, text: bytes) -> None:
    """``path``'s zip with its groups member replaced by ``text``."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, text if info.filename.endswith(f"extra/{EXTRA_FILE}") else data)


@pytest.mark.parametrize("text", [
    b"[1, 2]", b"{not json", b'{"core_v1": "core.v1"}',
    b'{"groups": {"core_v1": "a/b"}, "classes": {}}', b'{"groups": {"core_v1": 3}, "classes": {}}',
    b'{"groups": {"import os": "x"}, "classes": {}}',
    b'{"groups": {"core_v1": "core.v1"}, "classes": {"core_v1": "os.system"}}',
    b'{"groups": {"core_v1": "core.v1"}, "classes": {"elsewhere": "Sequential"}}'])
def test_a_damaged_groups_member_is_a_typed_refusal(text: bytes, made: dict, tmp_path: Path) -> None:
    _, _, _, path = made["dotted_group"]
    with zipfile.ZipFile(path) as zf:
        assert any(n.endswith(f"extra/{EXTRA_FILE}") for n in zf.namelist())
    bad = tmp_path / "bad.pt2"
    _with_member(path, bad, text)
    with pytest.raises(MalformedFileError, match=EXTRA_FILE) as info:
        weightio.read(bad)
    assert "bad.pt2" in str(info.value)


def test_a_pt2_without_groups_reads_with_dotted_names(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    program = torch.export.export(model, (torch.randn(2, 4),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    (tmp_path / "plain.pt2").write_bytes(buffer.getvalue())
    archive = weightio.read(tmp_path / "plain.pt2")
    assert not any("/" in layer.name for layer in archive.spec.layers)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _layers(path: Path) -> list[tuple[str, str]]:
    return [(layer.name, type(layer).__name__) for layer in keras.saving.load_model(path).layers]


def test_convert_nested_and_flat_flags(made: dict, tmp_path: Path) -> None:
    """``weightio convert model.pt2 back.keras``: the nesting back by default and with
    ``--nested``; ``--flat`` writes ``middle_core_dense``; both compute Keras's numbers."""
    model, x, _, path = made["doubly_nested"]
    reference = np.asarray(model(x, training=False))
    for flag, nested in [(None, True), ("--nested", True), ("--flat", False)]:
        target = tmp_path / f"back{flag or ''}.keras"
        done = _cli("convert", str(path), str(target), *([flag] if flag else []))
        assert done.returncode == 0, done.stderr
        layers = _layers(target)
        assert (("middle", "Sequential") in layers) is nested, layers  # the user's class
        assert ("middle_core_dense", "Dense") in layers or nested
        assert_close(reference, np.asarray(keras.saving.load_model(target)(x, training=False)))


def test_nested_flag_on_another_target_is_one_line_and_exit_2(made: dict, tmp_path: Path) -> None:
    _, _, _, path = made["doubly_nested"]
    done = _cli("convert", str(path), str(tmp_path / "out.pt2"), "--nested")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "applies to .keras targets" in done.stderr
    assert not (tmp_path / "out.pt2").exists()


def test_without_keras_nesting_is_flat_with_a_warning_or_refused(made: dict, tmp_path: Path) -> None:
    model, x, _, _ = made["doubly_nested"]
    path = weightio.save(weightio.read(model), tmp_path / "nested.safetensors")
    code = f"""
import warnings, weightio
from weightio.frameworks.keras.write.nesting import NestingError
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    weightio.convert({str(path)!r}, {str(tmp_path / "flat.keras")!r})
print([str(w.message) for w in caught if "written flat" in str(w.message)])
try:
    weightio.convert({str(path)!r}, {str(tmp_path / "never.keras")!r}, nested=True)
except NestingError as exc:
    print("refused", exc.layer)
"""
    out = run_without_keras(code).splitlines()
    assert "middle" in out[0] and out[1] == "refused middle"
    assert not (tmp_path / "never.keras").exists()
    assert ("middle_core_dense", "Dense") in _layers(tmp_path / "flat.keras")
    loaded = keras.saving.load_model(tmp_path / "flat.keras")
    assert_close(np.asarray(model(x, training=False)), np.asarray(loaded(x, training=False)))
