"""``.pt2`` (torch.export) programs as a source: written by weightio and by torch.export.save,
read, run, inspected and converted to Keras; damaged and code-carrying files refused by type.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import weightio
from weightio.errors import MalformedFileError, UnsafeFormatError, UnsupportedLayerError

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch]

PRODUCERS = ("torch", "weightio")
MODELS = ("mlp", "cnn")


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def _cnn() -> torch.nn.Module:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5),
    ).eval()
    with torch.no_grad():  # statistics a trained model would have, not the identity defaults
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _input(name: str) -> np.ndarray:
    shape = (4, 6) if name == "mlp" else (4, 3, 8, 8)
    return np.random.default_rng(2).standard_normal(shape).astype("f4")


def _close(reference: np.ndarray, got: np.ndarray) -> None:
    scale = max(float(np.abs(reference).max()), 1e-6)
    assert got.shape == reference.shape
    assert float(np.abs(got - reference).max()) <= 1e-5 * scale


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, object]]:
    """Each model as a .pt2 from each producer, with the module it came from."""
    folder = tmp_path_factory.mktemp("pt2")
    made = {}
    for name, build in (("mlp", _mlp), ("cnn", _cnn)):
        module = build()
        x = torch.from_numpy(_input(name))
        path = folder / f"{name}_torch.pt2"
        torch.export.save(torch.export.export(module, (x,)), path)
        made["torch", name] = (path, module)
        path = folder / f"{name}_weightio.pt2"
        result = weightio.convert(module, path, example_input=x)
        assert result.verification is not None and result.verification.passed
        made["weightio", name] = (path, module)
    return made


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("producer", PRODUCERS)
def test_pt2_reads_and_runs_like_its_module(programs, producer: str, model: str) -> None:
    path, module = programs[producer, model]
    archive = weightio.read(path)
    assert not archive.spec.weights_only
    x = _input(model)
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    _close(reference, weightio.run(archive, x))
    if producer == "torch":  # the program records the module's own state-dict keys
        expected = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
        assert set(archive.tensors) == expected
        for key in expected:
            np.testing.assert_array_equal(archive.tensors[key], module.state_dict()[key].numpy())


def test_pt2_source_runs_the_program_itself(programs) -> None:
    path, module = programs["torch", "cnn"]
    result = weightio.convert(path, path.with_name("cnn_again.safetensors"))
    assert result.verification is not None and result.verification.passed


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.mark.parametrize("producer", PRODUCERS)
def test_cli_inspect_pt2(programs, producer: str) -> None:
    path, module = programs[producer, "cnn"]
    result = cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "conv" in result.stdout and "batch_norm" in result.stdout


@pytest.mark.keras
@pytest.mark.parametrize("producer", PRODUCERS)
def test_cli_convert_pt2_to_keras(programs, producer: str, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    for model in MODELS:
        path, module = programs[producer, model]
        target = tmp_path / f"{model}.keras"
        result = cli("convert", str(path), str(target))
        assert result.returncode == 0, result.stderr
        x = _input(model)
        with torch.no_grad():
            reference = module(torch.from_numpy(x)).numpy()
        loaded = keras.saving.load_model(target)
        fed = x if x.ndim == 2 else np.transpose(x, (0, 2, 3, 1))  # Keras takes channels-last
        _close(reference, np.asarray(loaded(fed, training=False)))


def test_unsupported_op_is_refused_by_node(tmp_path: Path) -> None:
    class Erf(torch.nn.Module):
        def forward(self, x):
            return torch.special.erf(x)

    path = tmp_path / "erf.pt2"
    torch.export.save(torch.export.export(Erf(), (torch.zeros(2, 3),)), path)
    with pytest.raises(UnsupportedLayerError, match="erf") as info:
        weightio.read(path)
    assert "erf" in str(info.value.layer) and "erf.pt2" in str(info.value)


# --- damaged and hostile files -----------------------------------------------------------------


def _rewrite(source: Path, target: Path, change) -> Path:
    """Copy a .pt2 zip member by member; ``change(name, data)`` returns new bytes or None to drop."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return target


def _json_edit(member: str, edit):
    def change(name: str, data: bytes) -> bytes:
        if name.endswith(member):
            doc = json.loads(data)
            edit(doc)
            return json.dumps(doc).encode()
        return data

    return change


def _pickled_weight(doc) -> None:
    next(iter(doc["config"].values()))["use_pickle"] = True


def _guards(doc) -> None:
    doc["guards_code"] = ["__import__('os').system('echo pwned') == 0"]


def _evil_expression(doc) -> None:
    doc["range_constraints"] = {"__import__('os').system('echo pwned')": {"min_val": 0,
                                                                          "max_val": None}}


def _python_target(doc) -> None:
    doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.pickle.loads"


HOSTILE = {
    "python-target": (lambda src, dst: _rewrite(
        src, dst, _json_edit("models/model.json", _python_target)), UnsafeFormatError),
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
                  MalformedFileError),
    "not-a-zip": (lambda src, dst: dst.write_bytes(b"not a zip file at all\n" * 10),
                  MalformedFileError),
    "empty": (lambda src, dst: dst.write_bytes(b""), MalformedFileError),
    "missing-program": (lambda src, dst: _rewrite(
        src, dst, lambda n, d: None if n.endswith("models/model.json") else d), MalformedFileError),
    "other-zip": (lambda src, dst: zipfile.ZipFile(dst, "w").writestr("a/hello.txt", "hi"),
                  MalformedFileError),
    "program-not-json": (lambda src, dst: _rewrite(
        src, dst, lambda n, d: b"{nope" if n.endswith("models/model.json") else d),
        MalformedFileError),
    "pickled-weight": (lambda src, dst: _rewrite(
        src, dst, _json_edit("model_weights_config.json", _pickled_weight)), UnsafeFormatError),
    "guard-code": (lambda src, dst: _rewrite(src, dst, _json_edit("models/model.json", _guards)),
                   UnsafeFormatError),
    "sympify-code": (lambda src, dst: _rewrite(
        src, dst, _json_edit("models/model.json", _evil_expression)), UnsafeFormatError),
    "legacy-member": (lambda src, dst: _rewrite(
        src, dst, lambda n, d: d) and _append(dst, "version", b"1"), UnsafeFormatError),
    "aoti-library": (lambda src, dst: _rewrite(src, dst, lambda n, d: d) and _append(
        dst, f"{_prefix(src)}data/aotinductor/model/model.so", b"\x7fELF"), UnsafeFormatError),
}


def _prefix(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        first = zf.namelist()[0]
    return first[: first.index("/") + 1]


def _append(path: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def hostile(programs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile_pt2")
    source = programs["torch", "mlp"][0]
    made = {}
    for name, (make, _) in HOSTILE.items():
        made[name] = folder / f"{name}.pt2"
        make(source, made[name])
    return made


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pt2_is_a_typed_error_naming_the_file(hostile, name: str) -> None:
    path = hostile[name]
    with pytest.raises(HOSTILE[name][1]) as info:
        weightio.read(path)
    assert str(path) in str(info.value)


def test_trusted_pt2_skips_the_checks_but_not_the_typing(hostile) -> None:
    with pytest.raises(MalformedFileError, match="torch.export.load could not read it"):
        weightio.read(hostile["missing-program"], trust_pickle=True)


@pytest.mark.parametrize("name", ["truncated", "guard-code"])
def test_cli_broken_pt2_exits_2_with_one_line(hostile, name: str, tmp_path: Path) -> None:
    for verb in (["inspect"], ["convert", "--to", "keras"]):
        args = [*verb, str(hostile[name])]
        if verb[0] == "convert":
            args = ["convert", str(hostile[name]), str(tmp_path / "out.keras")]
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr and str(hostile[name]) in result.stderr
        assert not (tmp_path / "out.keras").exists()


VERBS = {
    "inspect": ["inspect", "{pt2}"],
    "convert": ["convert", "{pt2}", "{out}/cnn.safetensors"],
    "diff": ["diff", "{pt2}", "{other}"],
    "run": ["run", "{pt2}", "--input", "{npy}", "--output", "{out}/y.npy"],
    "explain": ["explain", "{pt2}", "--input", "{npy}"],
    "plot": ["plot", "{pt2}", "--out", "{out}/plots"],
    "cast": ["cast", "{pt2}", "{out}/half.safetensors", "--dtype", "float16"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_reads_pt2(programs, verb: str, tmp_path: Path) -> None:
    pt2, module = programs["torch", "cnn"]
    npy = tmp_path / "x.npy"
    x = _input("cnn")
    np.save(npy, x)
    args = [a.format(pt2=pt2, other=programs["weightio", "cnn"][0], npy=npy, out=tmp_path)
            for a in VERBS[verb]]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr  # diff exits 1 when the files differ
    assert "Traceback" not in result.stderr
    if verb == "run":
        with torch.no_grad():
            _close(module(torch.from_numpy(x)).numpy(), np.load(tmp_path / "y.npy"))


class _TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(2, 4)

    def forward(self, x, y):
        return torch.cat([self.a(x), self.b(y)], 1)


def test_weightio_program_with_two_inputs_and_its_size_guard(tmp_path: Path) -> None:
    """weightio's own .pt2 of a two-input model records a guard (the batch sizes agree), which
    is plain size arithmetic and so passes the check.
    """
    torch.manual_seed(3)
    module = _TwoInputs().eval()
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    path = tmp_path / "two.pt2"
    weightio.convert(module, path, example_input=(x, y))
    with zipfile.ZipFile(path) as zf:
        program = json.loads(next(zf.read(n) for n in zf.namelist() if n.endswith("models/model.json")))
    assert program["guards_code"]  # the case this test is about
    archive = weightio.read(path)
    with torch.no_grad():
        _close(module(x, y).numpy(), weightio.run(archive, [x.numpy(), y.numpy()]))


def test_float64_program_keeps_its_dtype(tmp_path: Path) -> None:
    module = _mlp().double()
    x = torch.from_numpy(_input("mlp").astype("f8"))
    path = tmp_path / "f64.pt2"
    torch.export.save(torch.export.export(module, (x,)), path)
    archive = weightio.read(path)
    assert archive.tensors["0.weight"].dtype == np.float64
    with torch.no_grad():
        _close(module(x).numpy(), weightio.run(archive, x.numpy()))


class _Text(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 4, padding_idx=0)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, tokens):
        return self.head(torch.amax(self.embed(tokens), 1))


def test_embedding_program_from_torch_export(tmp_path: Path) -> None:
    torch.manual_seed(4)
    module = _Text().eval()
    tokens = torch.randint(0, 11, (3, 5))
    path = tmp_path / "text.pt2"
    torch.export.save(torch.export.export(module, (tokens,)), path)
    archive = weightio.read(path)
    assert set(archive.tensors) == set(module.state_dict())
    assert archive.spec.provenance.source_class == "torch.export.ExportedProgram"
    with torch.no_grad():
        _close(module(tokens).numpy(), weightio.run(archive, tokens.numpy()))


# --- the findings, shown: what torch.export.load runs, and that weightio refuses it first -------


class _Touch:
    """Unpickling this creates the folder ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def _with_pickled_weight(source: Path, target: Path, canary: Path) -> Path:
    import pickle

    payload = pickle.dumps(_Touch(canary), protocol=2)

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            doc = json.loads(data)
            first = next(iter(doc["config"].values()))
            first["use_pickle"] = True
            first["path_name"] = "evil"
            return json.dumps(doc).encode()
        return data

    _rewrite(source, target, change)
    return _append(target, f"{_prefix(source)}data/weights/evil", payload)


def _with_guard(source: Path, target: Path, canary: Path) -> Path:
    def edit(doc) -> None:
        doc["guards_code"] = [f"__import__('os').mkdir({str(canary)!r}) is None"]

    return _rewrite(source, target, _json_edit("models/model.json", edit))


def _with_expression(source: Path, target: Path, canary: Path) -> Path:
    """A symbolic batch size whose sympy text calls code (torch parses it with sympify)."""
    def change(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            text = data.decode()
            assert "positive=True" in text  # a dynamic-batch program records its symbol so
            return text.replace("positive=True", f"positive=__import__('os').mkdir({str(canary)!r}) is None", 1).encode()
        return data

    return _rewrite(source, target, change)


ATTACKS = {"pickled-weight": _with_pickled_weight, "guard-code": _with_guard,
           "sympify-expression": _with_expression}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_torch_export_load_runs_the_file_and_weightio_refuses_first(programs, tmp_path, attack):
    # weightio's own program has a dynamic batch, hence a symbolic size to poison
    source = programs["weightio" if attack == "sympify-expression" else "torch", "mlp"][0]
    make = ATTACKS[attack]
    canary = tmp_path / "canary"
    path = make(source, tmp_path / f"{attack}.pt2", canary)
    with pytest.raises(UnsafeFormatError):
        weightio.read(path)
    assert not canary.exists()
    try:  # the finding: torch runs it (the pickle on load, the guard when the module is called)
        torch.export.load(path).module()(torch.zeros(4, 6))
    except Exception:
        pass
    assert canary.exists()


# --- weightio's own .pt2 of every sample kind it reads back --------------------------------------

#: Kinds whose weightio-written programs read back to verified archives (docs/layers.md names);
#: the rest are refused naming the ATen node without a mapping (div, unsqueeze, zeros for the
#: recurrent initial state, attention's sliced in_proj, adaptive max pooling, -inf padding).
READS_BACK = (
    "dense", "activation", "dropout", "identity", "affine", "rescaling", "binary_proba", "conv",
    "separable_conv", "conv_transpose", "pool", "global_pool", "zero_padding", "upsampling",
    "flatten", "reshape", "permute", "batch_norm", "layer_norm", "group_norm", "add", "subtract",
    "multiply", "maximum", "minimum", "concatenate",
)
#: Samples of those kinds whose program uses an operation without a mapping.
REFUSED_SAMPLES = {("pool", "torch_max_ceil"): "pad", ("global_pool", "max1d_keepdims"): "adaptive_max_pool1d"}


@pytest.fixture(scope="module")
def samples():
    sys.path.insert(0, str(Path(__file__).parents[1] / "keras"))
    try:
        import keras_samples
    finally:
        sys.path.pop(0)
    return keras_samples.SAMPLES


@pytest.mark.keras
@pytest.mark.parametrize("kind", READS_BACK)
def test_weightio_pt2_of_each_kind_reads_back_verified(samples, kind: str, tmp_path: Path) -> None:
    pytest.importorskip("keras")
    for name, make in samples[kind].items():
        path = tmp_path / f"{name}.pt2"
        weightio.convert(make(), path)
        if (kind, name) in REFUSED_SAMPLES:
            with pytest.raises(UnsupportedLayerError, match=REFUSED_SAMPLES[kind, name]):
                weightio.read(path)
            continue
        result = weightio.convert(path, tmp_path / f"{name}.safetensors")
        # verified against the program itself (a kind may come back as its composition:
        # separable_conv as two convolutions, binary_proba as dense + sigmoid)
        assert result.verification is not None and result.verification.passed, name
        assert not result.archive.spec.weights_only
