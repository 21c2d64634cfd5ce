"""The Keras writer: one mapping per kind, two back ends, for every kind in ``KERAS_WRITE``.

Every sample archive (``keras_samples.SAMPLES``, one or more per registered kind) is written as
a ``.keras`` file in one process where importing keras or tensorflow fails, then loaded by
``keras.saving.load_model(safe_mode=True)`` here. Each loaded file must compute what the numpy
runtime computes and exactly what the live back end (``to_keras``) builds; and it must be what
Keras itself writes for that model: its config a fixed point of Keras's serialization, its
``model.weights.h5`` the same groups, names and bytes as ``model.save`` of the live model.
"""

from __future__ import annotations

import io
import json
import os
import re
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
pytest.importorskip("sklearn")

from conftest import assert_close  # noqa: E402
from keras_samples import REFUSED, SAMPLES, keras_source, torch_cnn  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError, WeightioError  # noqa: E402
from weightio.frameworks.keras.model import read_keras_file, run_keras  # noqa: E402
from weightio.frameworks.keras.write.base import KERAS_WRITE  # noqa: E402
from weightio.layouts.flow import runner_in_layout  # noqa: E402
from weightio.runtime.forward import output_dtype  # noqa: E402
from weightio.verbs.proof import probe_inputs  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

#: A process in which keras and tensorflow cannot be imported (asserted afterwards).
BLOCKER = """
import sys
class _NoKeras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _NoKeras())
"""
_CHECK = (
    "\nimport json as _json\nprint(_json.dumps(sorted(m for m in sys.modules "
    "if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))))"
)

#: Tolerance relative to the output's scale (``conftest.assert_close``), by the model's dtype.
TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}

CASES = [(kind, case) for kind in KERAS_WRITE.keys() for case in SAMPLES.get(kind, {})]


def run_without_keras(code: str) -> str:
    """Run ``code`` where keras/tensorflow cannot load; return its output, having checked that."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER + code + _CHECK], capture_output=True, text=True,
        timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == [], "keras or tensorflow was imported"
    return "\n".join(lines[:-1])


def test_every_registered_kind_has_a_sample() -> None:
    assert [kind for kind in KERAS_WRITE.keys() if not SAMPLES.get(kind)] == []
    assert set(SAMPLES) <= set(KERAS_WRITE.keys())


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    """Every sample archive, and the outcome of writing each as ``.keras`` without Keras."""
    folder = tmp_path_factory.mktemp("keras_write")
    archives = {}
    for kind, case in CASES:
        archives[kind, case] = SAMPLES[kind][case]()
        weightio.save(archives[kind, case], folder / f"{kind}-{case}.safetensors")
    code = f"""
import json, pathlib, weightio
from weightio.errors import UnsupportedLayerError
from weightio.frameworks.keras.files.writer import write_keras_file
results = {{}}
for source in sorted(pathlib.Path({str(folder)!r}).glob("*.safetensors")):
    target = source.with_suffix(".keras")
    try:
        write_keras_file(weightio.load(source), target)
        results[source.stem] = {{"written": True}}
    except UnsupportedLayerError as exc:
        results[source.stem] = {{"refused": str(exc), "layer": exc.layer, "left": target.exists()}}
print(json.dumps(results))
"""
    results = json.loads(run_without_keras(code).splitlines()[-1])
    return archives, results, folder


def keras_runner(model: Any, archive: weightio.Archive) -> Any:
    """Canonical inputs in, canonical outputs out, for a channels-last Keras model."""
    return runner_in_layout(archive.spec, lambda xs: run_keras(model, xs), "channels_last")


def _plain(value: Any) -> Any:
    """JSON data without Keras's per-save object ids."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _members(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``.keras`` file's config and its weights file's every group and dataset."""
    import h5py

    tree: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            tree[name] = (obj.shape, str(obj.dtype), dict(obj.attrs), np.asarray(obj).tobytes())
        else:  # Keras numbers the names of sublayers it creates (dropout_3): compare the stem
            depth = name.count("/")
            tree[name] = {k: str(v) if depth < 3 else re.sub(r"_\d+$", "", str(v)) for k, v in obj.attrs.items()}

    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
        with h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as h5:
            tree["/"] = dict(h5.attrs)
            h5.visititems(visit)
    return config, tree


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_file_and_live_back_ends_compute_the_archive(kind: str, case: str, written: tuple, tmp_path: Path) -> None:
    archives, results, folder = written
    archive, result = archives[kind, case], results[f"{kind}-{case}"]
    if kind in REFUSED:
        assert result["layer"] == REFUSED[kind] and not result["left"], result
        with pytest.raises(UnsupportedLayerError) as info:
            weightio.to_keras(archive)
        assert info.value.layer == REFUSED[kind] and str(info.value) == result["refused"]
        return
    assert result == {"written": True}
    path = folder / f"{kind}-{case}.keras"
    loaded = keras.saving.load_model(path, safe_mode=True)
    live = weightio.to_keras(archive)
    xs = probe_inputs(archive.spec, seed=0, samples=4)
    expected = weightio.run(archive, xs)
    expected = expected if isinstance(expected, list) else [expected]
    from_file, from_live = keras_runner(loaded, archive)(xs), keras_runner(live, archive)(xs)
    tol = TOLERANCE[output_dtype(archive.spec).name]
    for want, got_file, got_live in zip(expected, from_file, from_live, strict=True):
        assert_close(want, got_file, tol=tol)
        assert np.array_equal(got_file, got_live)  # one mapping: the same model, the same numbers

    config, tree = _members(path)
    assert _plain(json.loads(json.dumps(keras.saving.serialize_keras_object(loaded)))) == _plain(config)
    live.save(tmp_path / "live.keras")
    live_config, live_tree = _members(tmp_path / "live.keras")
    assert _plain(live_config) == _plain(config)
    assert tree == live_tree
    source = keras_source(archive)
    if source is not None:
        assert_written_as_keras_wrote(config, source)


def _without_inner_names(entry: dict[str, Any]) -> dict[str, Any]:
    """A layer entry without the names of the layers a ``Bidirectional`` wraps (weightio names
    them after the wrapper, Keras after the layer it was given)."""
    entry = json.loads(json.dumps(entry))
    for key in ("layer", "backward_layer"):
        inner = entry["config"].get(key)
        if isinstance(inner, dict):
            inner["config"].pop("name", None)
    return entry


def assert_written_as_keras_wrote(config: dict[str, Any], source: dict[str, Any]) -> None:
    """Every layer written under a Keras layer's name and class is serialized as Keras did it.

    Layers weightio inserts (permutes, paddings) have no counterpart; a layer written as another
    class computing the same (``ReLU`` as ``Activation("relu")``: the spec keeps the function,
    not the class) is not compared.
    """
    theirs = {entry["config"]["name"]: entry for entry in _plain(json.loads(json.dumps(source)))["config"]["layers"]}
    compared = 0
    for entry in _plain(config)["config"]["layers"]:
        keras_entry = theirs.get(entry["config"]["name"])
        if keras_entry is None or keras_entry["class_name"] != entry["class_name"]:
            continue
        assert _without_inner_names(entry) == _without_inner_names(keras_entry)
        compared += 1
    assert compared >= 2  # the input and at least one layer


def test_keras_files_of_nested_layers_read_without_keras_as_with_it(tmp_path: Path) -> None:
    """Bidirectional and MultiHeadAttention keep their variables in sublayers; the framework-free
    reader puts them back in ``layer.weights`` order (forward before backward; query, key, value,
    output), so it reads Keras's own file as Keras does."""
    L = keras.layers
    inp = keras.Input((6, 4))
    h = L.Bidirectional(L.LSTM(2, return_sequences=True))(inp)
    h = L.MultiHeadAttention(2, 2)(h, h)
    out = L.Bidirectional(L.GRU(3))(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for var in model.weights:
        var.assign(rng.standard_normal(tuple(var.shape)).astype("float32"))
    model.save(tmp_path / "nested.keras")
    ours, (theirs, _) = weightio.read(tmp_path / "nested.keras"), read_keras_file(tmp_path / "nested.keras")
    assert [l.kind for l in ours.spec.layers] == ["lstm", "multi_head_attention", "gru"]
    assert list(ours.tensors) == list(theirs.tensors)
    for key in ours.tensors:
        assert np.array_equal(ours.tensors[key], theirs.tensors[key]), key
    x = rng.standard_normal((3, 6, 4)).astype("float32")
    assert_close(run_keras(model, [x])[0], weightio.run(ours, x))


def test_cli_writes_a_torch_cnn_as_keras_without_keras(tmp_path: Path) -> None:
    """``weightio convert cnn.safetensors cnn.keras`` where keras cannot be imported; Keras loads it.

    A ``.pt`` file holds only a state dict (no architecture: converting it to Keras is refused
    as weights-only, checked below), so the CNN travels as the archive read from the module.
    """
    module = torch_cnn()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
        bn = module[1]
        bn.running_mean.copy_(torch.randn(6))
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    module.eval()
    x = np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype("float32")
    weightio.save(weightio.read(module, example_input=torch.from_numpy(x[:2])), tmp_path / "cnn.safetensors")
    torch.save(module.state_dict(), tmp_path / "cnn.pt")
    argv = ["weightio", "convert", str(tmp_path / "cnn.safetensors"), str(tmp_path / "cnn.keras")]
    bare = ["weightio", "convert", str(tmp_path / "cnn.pt"), str(tmp_path / "bare.keras")]
    output = run_without_keras(f"""
import contextlib, io, json
from weightio.cli import main
for argv in ({argv!r}, {bare!r}):
    sys.argv, err, code = argv, io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
    print(json.dumps([code, " ".join(err.getvalue().split())]))
""")
    (converted, _), (refused, message) = (json.loads(line) for line in output.splitlines())
    assert converted == 0 and refused != 0 and "weights only" in message, output
    assert not (tmp_path / "bare.keras").exists()

    model = keras.saving.load_model(tmp_path / "cnn.keras", safe_mode=True)
    assert tuple(model.input_shape) == (None, 8, 8, 1)
    classes = [type(layer).__name__ for layer in model.layers]
    assert classes.count("BatchNormalization") == 1 and "Permute" not in classes, classes
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    assert_close(reference, run_keras(model, [np.moveaxis(x, 1, -1)])[0])

    # With Keras installed, convert builds the model live and checks it as a witness.
    result = weightio.convert(tmp_path / "cnn.safetensors", tmp_path / "live.keras")
    assert result.verification is not None and result.verification.passed
    assert ("numpy", "keras") in {check.witnesses for check in result.verification.checks}


def test_a_failed_file_write_leaves_the_target_as_it_was(written: tuple, tmp_path: Path) -> None:
    """The file back end writes through the atomic writer: a failure at the last step (the zip
    and its weights complete, the rename pending) leaves the old target and no scratch file."""
    from weightio.format import atomic
    from weightio.frameworks.keras.files.writer import write_keras_file

    archives, _, _ = written
    target = tmp_path / "m.keras"
    target.write_bytes(b"the previous model")

    def fail(point: str) -> None:
        if point == "before-rename":
            raise OSError("the disk went away")

    atomic.fault_hook = fail
    try:
        with pytest.raises(OSError, match="disk went away"):
            write_keras_file(archives["lstm", "bidirectional_sequences"], target)
    finally:
        atomic.fault_hook = None
    assert target.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


#: Cases ``load_into`` refuses, with words of its message: parameters Keras keeps in a layer's
#: config, one archive layer for several Keras layers with weights (a stacked RNN; binary_proba's
#: frozen Dense, which the archive holds no tensors for), a channels-first flatten with no Dense
#: to fold its order into.
LOAD_INTO_REFUSED = {
    ("affine", "standard_scaler"): "in its config",
    ("normalization", "mean_variance"): "in its config",
    ("binary_proba", "logistic"): "layers with weights",
    ("simple_rnn", "torch_stacked_bidirectional"): "layers with weights",
    ("lstm", "torch_stacked_two_biases"): "layers with weights",
    ("global_pool", "torch_adaptive"): "channels-first order",
    ("flatten", "torch_alone"): "channels-first order",
    # A Keras operation's constants live in its call (config), not in weights.
    **{(kind, case): "in its config" for kind, case in (
        ("reduce", "on_map"), ("reduce", "on_sequence"), ("slice", "on_map"), ("arithmetic", "on_map"),
        ("arithmetic", "on_sequence"), ("parameter", "on_sequence"), ("cast", "on_sequence"))},
}


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_load_into_takes_the_mappings_arrays(kind: str, case: str, written: tuple) -> None:
    """``load_into`` a freshly randomized ``to_keras`` model restores what the archive computes."""
    archive = written[0][kind, case]
    if kind in REFUSED:
        return
    model = weightio.to_keras(archive)
    rng = np.random.default_rng(5)
    for var in model.weights:
        var.assign(rng.standard_normal(tuple(var.shape)).astype(var.dtype))
    if (kind, case) in LOAD_INTO_REFUSED:
        with pytest.raises(WeightioError, match=LOAD_INTO_REFUSED[kind, case]):
            weightio.load_into(archive, model)
        return
    weightio.load_into(archive, model)
    xs = probe_inputs(archive.spec, seed=0, samples=3)
    expected = weightio.run(archive, xs)
    got = keras_runner(model, archive)(xs)
    for want, have in zip(expected if isinstance(expected, list) else [expected], got, strict=True):
        assert_close(want, have, tol=TOLERANCE[output_dtype(archive.spec).name])
