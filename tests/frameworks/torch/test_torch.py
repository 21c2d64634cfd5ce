"""The PyTorch adapter against real PyTorch models: every conversion is checked on outputs.

Three witnesses per model: the source module, the numpy runtime on the archive, and the module
``to_torch`` builds from the archive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import ml_dtypes  # noqa: E402

import weightio.runtime  # noqa: E402
from weightio.errors import (  # noqa: E402
    MalformedFileError,
    SourceNotFoundError,
    SpecValidationError,
    StructureMismatchError,
    TraceError,
    UnsafeFormatError,
    UnsupportedLayerError,
    UnsupportedSourceError,
    UnsupportedTensorError,
    WeightsOnlyArchiveError,
)
from weightio.format.store import load, save
from weightio.frameworks.torch.files.pickle import read_checkpoint
from weightio.frameworks.torch.files.state_dict import (
    read_state_dict,
    read_torch_file,
    save_archive_state_dict,
    save_pt2,
    save_state_dict,
)
from weightio.frameworks.torch.load import load_into_torch
from weightio.frameworks.torch.read.base import TORCH_READ
from weightio.frameworks.torch.read.trace import read_torch_module
from weightio.frameworks.torch.write.base import TORCH_WRITE
from weightio.frameworks.torch.write.build import run_torch, to_torch
from weightio.spec.activations import (
    ActivationFn,
    ActivationName,  # noqa: E402
)

pytestmark = pytest.mark.torch


# -- helpers ----------------------------------------------------------------------------------


def assert_close(got: np.ndarray, ref: np.ndarray, what: str = "") -> None:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, what
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    worst = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert worst <= 1e-5 * scale, f"{what}: max abs diff {worst} > {1e-5 * scale}"


def as_list(value):
    return value if isinstance(value, list) else [value]


def sample(*shape: int, seed: int = 0, scale: float = 3.0, dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def check_three_witnesses(module, x, **read_kwargs):
    """Read ``module``; compare torch, the numpy runtime and ``to_torch`` on ``x``."""
    xs = x if isinstance(x, list) else [x]
    archive = read_torch_module(module, **read_kwargs)
    reference = run_torch(module, xs)
    runtime = as_list(weightio.runtime.run(archive, xs))
    rebuilt = to_torch(archive)
    converted = run_torch(rebuilt, xs)
    assert len(reference) == len(runtime) == len(converted)
    for i, ref in enumerate(reference):
        assert runtime[i].dtype == ref.dtype, f"output {i} dtype"
        assert_close(runtime[i], ref, f"runtime output {i}")
        assert_close(converted[i], ref, f"to_torch output {i}")
    return archive, rebuilt


def seeded(factory, seed: int = 0):
    torch.manual_seed(seed)
    return factory()


# -- linear networks --------------------------------------------------------------------------


def test_sequential_mlp_with_mixed_activations():
    model = seeded(lambda: nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(),
        nn.Linear(16, 16), nn.Tanh(),
        nn.Linear(16, 12), nn.GELU(approximate="tanh"),
        nn.Linear(12, 12), nn.LeakyReLU(0.1),
        nn.Linear(12, 8), nn.ELU(alpha=0.5),
        nn.Linear(8, 4), nn.Softmax(dim=1),
    ))
    biases = [p for n, p in model.named_parameters() if "bias" in n]
    assert all(float(p.detach().abs().min()) > 0 for p in biases)
    archive, rebuilt = check_three_witnesses(model, sample(7, 6))
    spec = archive.spec
    assert spec.is_chain and all(layer.inputs is None for layer in spec.layers)
    assert [layer.kind for layer in spec.layers] == ["dense", "activation"] * 6
    acts = {layer.name: layer.activation for layer in spec.layers if layer.kind == "activation"}
    assert acts["5"] == ActivationFn(name="gelu", approximate=True)
    assert acts["7"] == ActivationFn(name="leaky_relu", negative_slope=0.1)
    assert acts["9"] == ActivationFn(name="elu", alpha=0.5)
    assert acts["11"] == ActivationFn(name="softmax", axis=-1)
    assert list(archive.tensors) == list(model.state_dict())
    assert spec.inputs[0].shape == (6,) and spec.inputs[0].dtype == "F32"
    assert spec.provenance.source_framework == "torch"
    assert spec.provenance.source_framework_version == torch.__version__
    assert spec.provenance.source_class == "torch.nn.Sequential"
    assert isinstance(rebuilt, nn.Sequential) and not rebuilt.training


def test_linear_without_bias_and_nested_names():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(5, 7, bias=False)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.fc1(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.head = nn.Linear(7, 3)

        def forward(self, x):
            return self.head(self.encoder(x))

    model = seeded(Model)
    archive, rebuilt = check_three_witnesses(model, sample(4, 5))
    assert [layer.name for layer in archive.spec.layers] == ["encoder.fc1", "encoder.act", "head"]
    assert list(archive.tensors) == ["encoder.fc1.weight", "head.weight", "head.bias"]
    assert archive.spec.layers[0].use_bias is False
    assert archive.spec.provenance.source_class.endswith("Model")
    assert list(dict(rebuilt.named_children())) == ["encoder_fc1", "encoder_act", "head"]


ACTIVATION_MODULES = [
    (nn.ReLU(), ActivationFn(name="relu")),
    (nn.ReLU6(), ActivationFn(name="relu6")),
    (nn.LeakyReLU(), ActivationFn(name="leaky_relu", negative_slope=0.01)),
    (nn.LeakyReLU(0.3), ActivationFn(name="leaky_relu", negative_slope=0.3)),
    (nn.ELU(), ActivationFn(name="elu", alpha=1.0)),
    (nn.ELU(alpha=0.5), ActivationFn(name="elu", alpha=0.5)),
    (nn.CELU(alpha=0.7), ActivationFn(name="celu", alpha=0.7)),
    (nn.SELU(), ActivationFn(name="selu")),
    (nn.GELU(), ActivationFn(name="gelu", approximate=False)),
    (nn.GELU(approximate="tanh"), ActivationFn(name="gelu", approximate=True)),
    (nn.Sigmoid(), ActivationFn(name="sigmoid")),
    (nn.LogSigmoid(), ActivationFn(name="log_sigmoid")),
    (nn.Hardsigmoid(), ActivationFn(name="hard_sigmoid")),
    (nn.Tanh(), ActivationFn(name="tanh")),
    (nn.Hardtanh(), ActivationFn(name="hard_tanh")),
    (nn.Softmax(dim=1), ActivationFn(name="softmax", axis=-1)),
    (nn.Softmax(dim=-1), ActivationFn(name="softmax", axis=-1)),
    (nn.LogSoftmax(dim=1), ActivationFn(name="log_softmax", axis=-1)),
    (nn.Softplus(), ActivationFn(name="softplus")),
    (nn.Softsign(), ActivationFn(name="softsign")),
    (nn.SiLU(), ActivationFn(name="silu")),
    (nn.Hardswish(), ActivationFn(name="hard_silu")),
    (nn.Mish(), ActivationFn(name="mish")),
    (nn.Tanhshrink(), ActivationFn(name="tanh_shrink")),
    (nn.Softshrink(), ActivationFn(name="soft_shrink", threshold=0.5)),
    (nn.Softshrink(lambd=0.3), ActivationFn(name="soft_shrink", threshold=0.3)),
    (nn.Hardshrink(lambd=0.4), ActivationFn(name="hard_shrink", threshold=0.4)),
]


@pytest.mark.parametrize(
    ("act", "expected"), ACTIVATION_MODULES, ids=[repr(a) for a, _ in ACTIVATION_MODULES]
)
def test_every_activation_module(act, expected):
    model = seeded(lambda: nn.Sequential(nn.Linear(6, 9), act))
    archive, rebuilt = check_three_witnesses(model, sample(11, 6))
    layer = archive.spec.layers[1]
    assert layer.kind == "activation" and layer.activation == expected
    assert layer.source_class == f"torch.nn.{type(act).__name__}"
    # The rebuilt module reads back to the same activation, every parameter explicit.
    assert read_torch_module(rebuilt).spec.layers[1].activation == expected


FUNCTIONAL_FORMS = [
    ("F.relu", lambda x: F.relu(x), ActivationFn(name="relu")),
    ("F.relu inplace", lambda x: F.relu(x, inplace=True), ActivationFn(name="relu")),
    ("torch.relu", lambda x: torch.relu(x), ActivationFn(name="relu")),
    ("torch.relu input=", lambda x: torch.relu(input=x), ActivationFn(name="relu")),
    ("F.relu6", lambda x: F.relu6(x), ActivationFn(name="relu6")),
    ("F.leaky_relu default", lambda x: F.leaky_relu(x),
     ActivationFn(name="leaky_relu", negative_slope=0.01)),
    ("F.leaky_relu positional", lambda x: F.leaky_relu(x, 0.2),
     ActivationFn(name="leaky_relu", negative_slope=0.2)),
    ("F.elu", lambda x: F.elu(x, alpha=0.6), ActivationFn(name="elu", alpha=0.6)),
    ("F.celu", lambda x: F.celu(x, 0.8), ActivationFn(name="celu", alpha=0.8)),
    ("F.selu", lambda x: F.selu(x), ActivationFn(name="selu")),
    ("torch.selu", lambda x: torch.selu(x), ActivationFn(name="selu")),
    ("F.gelu", lambda x: F.gelu(x), ActivationFn(name="gelu", approximate=False)),
    ("F.gelu tanh", lambda x: F.gelu(x, approximate="tanh"),
     ActivationFn(name="gelu", approximate=True)),
    ("torch.sigmoid", lambda x: torch.sigmoid(x), ActivationFn(name="sigmoid")),
    ("F.sigmoid", lambda x: F.sigmoid(x), ActivationFn(name="sigmoid")),
    ("F.logsigmoid", lambda x: F.logsigmoid(x), ActivationFn(name="log_sigmoid")),
    ("F.hardsigmoid", lambda x: F.hardsigmoid(x), ActivationFn(name="hard_sigmoid")),
    ("torch.tanh", lambda x: torch.tanh(x), ActivationFn(name="tanh")),
    ("F.tanh", lambda x: F.tanh(x), ActivationFn(name="tanh")),
    ("F.hardtanh", lambda x: F.hardtanh(x), ActivationFn(name="hard_tanh")),
    ("F.softmax dim=1", lambda x: F.softmax(x, dim=1), ActivationFn(name="softmax", axis=-1)),
    ("F.softmax positional", lambda x: F.softmax(x, -1), ActivationFn(name="softmax", axis=-1)),
    ("torch.softmax", lambda x: torch.softmax(x, 1), ActivationFn(name="softmax", axis=-1)),
    ("F.log_softmax", lambda x: F.log_softmax(x, dim=1),
     ActivationFn(name="log_softmax", axis=-1)),
    ("torch.log_softmax", lambda x: torch.log_softmax(x, dim=-1),
     ActivationFn(name="log_softmax", axis=-1)),
    ("F.softplus", lambda x: F.softplus(x), ActivationFn(name="softplus")),
    ("F.softplus explicit", lambda x: F.softplus(x, beta=1, threshold=30),
     ActivationFn(name="softplus")),
    ("F.softsign", lambda x: F.softsign(x), ActivationFn(name="softsign")),
    ("F.silu", lambda x: F.silu(x), ActivationFn(name="silu")),
    ("F.hardswish", lambda x: F.hardswish(x), ActivationFn(name="hard_silu")),
    ("F.mish", lambda x: F.mish(x), ActivationFn(name="mish")),
    ("F.tanhshrink", lambda x: F.tanhshrink(x), ActivationFn(name="tanh_shrink")),
    ("F.softshrink", lambda x: F.softshrink(x, 0.25),
     ActivationFn(name="soft_shrink", threshold=0.25)),
    ("F.hardshrink", lambda x: F.hardshrink(x), ActivationFn(name="hard_shrink", threshold=0.5)),
    ("x.relu()", lambda x: x.relu(), ActivationFn(name="relu")),
    ("x.sigmoid()", lambda x: x.sigmoid(), ActivationFn(name="sigmoid")),
    ("x.tanh()", lambda x: x.tanh(), ActivationFn(name="tanh")),
    ("x.softmax(1)", lambda x: x.softmax(1), ActivationFn(name="softmax", axis=-1)),
    ("x.log_softmax(dim=-1)", lambda x: x.log_softmax(dim=-1),
     ActivationFn(name="log_softmax", axis=-1)),
]


class WithFunction(nn.Module):
    """A Linear followed by a functional activation, traced through ``forward``."""

    def __init__(self, fn):
        super().__init__()
        self.fc = nn.Linear(6, 9)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.fc(x))


@pytest.mark.parametrize(
    ("label", "fn", "expected"), FUNCTIONAL_FORMS, ids=[f[0] for f in FUNCTIONAL_FORMS]
)
def test_every_functional_form(label, fn, expected):
    model = seeded(lambda: WithFunction(fn))
    archive, _ = check_three_witnesses(model, sample(11, 6))
    layer = archive.spec.layers[1]
    assert layer.kind == "activation" and layer.activation == expected, label
    assert archive.spec.is_chain


def test_custom_module_with_functional_activations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 16)
            self.fc3 = nn.Linear(16, 5)

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = torch.tanh(self.fc2(x))
            x = F.dropout(x, p=0.2, training=self.training)
            return F.log_softmax(self.fc3(x), dim=1)

    model = seeded(Net)
    archive, _ = check_three_witnesses(model, sample(9, 8))
    kinds = [(layer.name, layer.kind) for layer in archive.spec.layers]
    assert kinds == [("fc1", "dense"), ("relu", "activation"), ("fc2", "dense"),
                     ("tanh", "activation"), ("dropout", "dropout"), ("fc3", "dense"),
                     ("log_softmax", "activation")]
    assert archive.spec.layer("relu").source_class == "torch.nn.functional.relu"
    assert archive.spec.layer("dropout").rate == 0.2


def test_example_input_when_the_shape_cannot_be_inferred():
    model = nn.Sequential(nn.Tanh(), nn.Softmax(dim=1))
    with pytest.raises(TraceError, match="example_input="):
        read_torch_module(model)
    x = sample(2, 3, 4)
    archive, _ = check_three_witnesses(model, x, example_input=torch.from_numpy(x))
    assert archive.spec.inputs[0].shape == (3, 4)
    # dim=1 of a rank-3 input is the second-to-last axis.
    assert archive.spec.layers[1].activation == ActivationFn(name="softmax", axis=-2)


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)
        self.fc3 = nn.Linear(8, 1)
        self.sig = nn.Sigmoid()

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h), self.sig(self.fc3(h))


def test_two_output_module_becomes_a_graph_module():
    model = seeded(TwoHeads)
    archive, rebuilt = check_three_witnesses(model, sample(6, 5))
    spec = archive.spec
    assert not spec.is_chain
    assert [(o.name, o.layer) for o in spec.outputs] == [("output_0", "fc2"), ("output_1", "sig")]
    assert spec.layer("fc3").inputs == ["act"]
    assert isinstance(rebuilt, torch.fx.GraphModule) and not rebuilt.training


def test_two_inputs_each_shape_inferred():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(5, 2)

        def forward(self, x, y):
            return self.a(x), torch.sigmoid(self.b(y))

    model = seeded(TwoInputs)
    xs = [sample(4, 3), sample(4, 5, seed=1)]
    archive, _ = check_three_witnesses(model, xs)
    assert [(i.name, i.shape) for i in archive.spec.inputs] == [("x", (3,)), ("y", (5,))]


def test_dropout_is_inert_and_train_mode_is_restored():
    model = seeded(lambda: nn.Sequential(
        nn.Linear(6, 10), nn.Dropout(0.5), nn.ReLU(), nn.AlphaDropout(0.2),
        nn.Linear(10, 4), nn.Dropout1d(0.1), nn.Identity(),
    ))
    model.train()
    archive, _ = check_three_witnesses(model, sample(5, 6))
    assert model.training and all(m.training for m in model.modules())
    kinds = [layer.kind for layer in archive.spec.layers]
    assert kinds == ["dense", "dropout", "activation", "dropout", "dense", "dropout", "identity"]
    assert archive.spec.layers[1].rate == 0.5 and archive.spec.layers[3].rate == 0.2


def test_float64_module_keeps_f64():
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6, dtype=torch.float64), nn.GELU(),
                                         nn.Linear(6, 2, dtype=torch.float64)))
    archive, rebuilt = check_three_witnesses(model, sample(3, 4, dtype=np.float64))
    assert {ref.dtype for _, _, ref in archive.spec.tensor_refs()} == {"F64"}
    assert archive.spec.inputs[0].dtype == "F64"
    assert all(p.dtype == torch.float64 for p in rebuilt.parameters())


# -- round trips --------------------------------------------------------------------------------


def assert_same_archive(a, b):
    assert a.spec.inputs == b.spec.inputs
    assert a.spec.outputs == b.spec.outputs
    assert a.spec.layers == b.spec.layers
    assert list(a.tensors) == list(b.tensors)
    for key in a.tensors:
        x, y = a.tensors[key], b.tensors[key]
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key


@pytest.mark.parametrize("factory", [
    lambda: nn.Sequential(nn.Linear(4, 8), nn.Mish(), nn.Linear(8, 8, bias=False),
                          nn.Softshrink(0.2), nn.Dropout(0.3), nn.Linear(8, 3),
                          nn.LogSoftmax(dim=-1)),
    TwoHeads,
], ids=["sequential", "two-heads"])
def test_torch_archive_torch_archive_is_bit_identical(factory, tmp_path):
    model = seeded(factory)
    first = read_torch_module(model)
    second = read_torch_module(to_torch(first))
    assert_same_archive(first, second)
    # And through a saved archive file.
    save(second, tmp_path / "model.safetensors")  # records sha256s in second's spec
    third = read_torch_module(to_torch(load(tmp_path / "model.safetensors")))
    assert_same_archive(first, third)


def test_bf16_and_float8_state_dict_bit_exact(tmp_path):
    torch.manual_seed(0)
    weight = torch.randn(5, 7).to(torch.bfloat16)
    scale = torch.randn(4).to(torch.float8_e4m3fn)
    archive = read_state_dict({"fc.weight": weight, "fc.scale": scale, "step": torch.tensor(3)})
    assert archive.spec.weights_only
    arr = archive.tensors["fc.weight"]
    assert arr.dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.array_equal(arr.view(np.int16), weight.view(torch.int16).numpy())
    f8 = archive.tensors["fc.scale"]
    assert f8.dtype == np.dtype(ml_dtypes.float8_e4m3fn)
    assert np.array_equal(f8.view(np.uint8), scale.view(torch.uint8).numpy())
    save(archive, tmp_path / "w.safetensors")
    back = load(tmp_path / "w.safetensors")
    assert back.tensors["fc.weight"].tobytes() == arr.tobytes()
    # And back into a module, still bit-exact.
    target = nn.Linear(7, 5, bias=False, dtype=torch.bfloat16)
    load_into_torch(read_state_dict({"weight": weight}), target)
    assert torch.equal(target.weight.view(torch.int16), weight.view(torch.int16))


def test_state_dict_copies_so_training_cannot_change_the_archive():
    model = seeded(lambda: nn.Linear(3, 2))
    archive = read_state_dict(model.state_dict())
    before = archive.tensors["weight"].copy()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert np.array_equal(archive.tensors["weight"], before)


@pytest.mark.parametrize(("value", "what"), [
    (lambda: torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8), "quantized"),
    (lambda: torch.randn(3, 3).to_sparse(), "dense"),
    (lambda: torch.empty(3, device="meta"), "meta"),
])
def test_unstorable_tensors_are_refused_by_key(value, what):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch deprecates quantized tensors
        tensor = value()
    with pytest.raises(UnsupportedTensorError, match=what) as info:
        read_state_dict({"layer.weight": tensor})
    assert info.value.tensor == "layer.weight"


# -- files ------------------------------------------------------------------------------------


def test_pt_state_dict_file_reads_weights_only(tmp_path):
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    path = save_state_dict(model, tmp_path / "model.pt")
    archive = read_torch_file(path)
    assert archive.spec.weights_only
    assert list(archive.tensors) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert np.array_equal(archive.tensors[key], value.numpy())
    assert archive.spec.provenance.source_file == "model.pt"
    assert len(archive.spec.provenance.source_digest) == len("blake3:") + 64
    with pytest.raises(WeightsOnlyArchiveError, match="load_into"):
        to_torch(archive)


def test_training_checkpoint_picks_its_only_state_dict_and_needs_key_for_several(tmp_path):
    model = seeded(lambda: nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3},
               path)
    for read in (read_torch_file, read_checkpoint):  # torch.load and the torch-free reader agree
        archive = read(path)
        assert list(archive.tensors) == ["weight", "bias"]
        assert archive.spec.provenance.source_key == "model"
        assert read(path, key="model").spec.provenance.source_key == "model"
        with pytest.raises(MalformedFileError, match="no entry 'net'"):
            read(path, key="net")
    two = tmp_path / "two.pth"
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "epoch": 3}, two)
    for read in (read_torch_file, read_checkpoint):
        with pytest.raises(MalformedFileError, match="several state dicts.*'model', 'ema'") as info:
            read(two)
        assert "two.pth" in str(info.value)


class _Touch:
    """Unpickling this would run ``touch`` on a canary file."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


class _Plain:
    pass


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    canary = tmp_path / "canary"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Touch(canary)}, path)
    with pytest.raises(UnsafeFormatError, match="system") as info:
        read_torch_file(path)
    assert "evil.pt" in str(info.value)
    assert not canary.exists()
    path = tmp_path / "custom.bin"
    torch.save({"weight": torch.zeros(2), "obj": _Plain()}, path)
    with pytest.raises(UnsafeFormatError, match="_Plain"):
        read_torch_file(path)


def test_bad_files(tmp_path):
    with pytest.raises(SourceNotFoundError):
        read_torch_file(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(MalformedFileError):
        read_torch_file(junk)
    with pytest.raises(UnsupportedSourceError, match="suffix"):
        read_torch_file(junk.rename(tmp_path / "junk.pkl"))
    with pytest.raises(UnsupportedTensorError, match="not a tensor"):
        read_state_dict({"weight": [1.0, 2.0]})
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(MalformedFileError, match="not a state dict"):
        read_torch_file(tensor_only)


def test_legacy_pickle_format_reads(tmp_path):
    model = seeded(lambda: nn.Linear(3, 2))
    path = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    archive = read_torch_file(path)
    assert np.array_equal(archive.tensors["weight"], model.weight.detach().numpy())


def test_save_state_dict_round_trip(tmp_path):
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)))
    path = save_state_dict(model, tmp_path / "weights.pt")
    fresh = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)), seed=1)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = sample(5, 4)
    assert_close(run_torch(fresh, [x])[0], run_torch(model, [x])[0])
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]  # no temp file left


def test_save_archive_state_dict_is_bit_exact(tmp_path):
    weight = torch.randn(3, 4).to(torch.bfloat16)
    archive = read_state_dict({"fc.weight": weight, "fc.bias": torch.arange(3.0)})
    path = save_archive_state_dict(archive, tmp_path / "sd.pt")
    state = torch.load(path, weights_only=True)
    assert list(state) == ["fc.weight", "fc.bias"]
    assert torch.equal(state["fc.weight"].view(torch.int16), weight.view(torch.int16))
    back = read_torch_file(path)
    assert back.tensors["fc.bias"].tobytes() == archive.tensors["fc.bias"].tobytes()


def test_save_pt2_round_trip(tmp_path):
    model = seeded(TwoHeads).eval()
    x = sample(3, 5)
    path = save_pt2(model, tmp_path / "model.pt2", (torch.from_numpy(x),))
    program = torch.export.load(path)
    got = program.module()(torch.from_numpy(x))
    ref = run_torch(model, [x])
    for g, r in zip(got, ref):
        assert_close(g.detach().numpy(), r)
    # A module built by to_torch (here a GraphModule) exports too.
    rebuilt = to_torch(read_torch_module(model))
    path = save_pt2(rebuilt, tmp_path / "rebuilt.pt2", (torch.from_numpy(x),))
    got = torch.export.load(path).module()(torch.from_numpy(x))
    for g, r in zip(got, ref):
        assert_close(g.detach().numpy(), r)


# -- refusals ---------------------------------------------------------------------------------


def test_unsupported_function_is_refused_naming_the_node():
    class MatMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            return torch.matmul(y, y)

    with pytest.raises(UnsupportedLayerError, match="torch.matmul.*not supported yet") as info:
        read_torch_module(seeded(MatMul))
    assert info.value.layer == "matmul"
    assert "MatMul" in str(info.value)


def test_unsupported_operator_and_method_are_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) @ x

    with pytest.raises(UnsupportedLayerError, match="operator.matmul") as info:
        read_torch_module(Residual())
    assert info.value.layer == "matmul"

    class View(WithFunction):
        def forward(self, x):
            return self.fc(x).view(-1)

    with pytest.raises(UnsupportedLayerError, match="method:view"):
        read_torch_module(View(None))


def test_parameter_used_directly_is_refused():
    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return torch.matmul(x, self.w)

    with pytest.raises(UnsupportedLayerError, match="self.w") as info:
        read_torch_module(Direct())
    assert info.value.layer == "w"


def test_module_called_twice_is_two_layers_sharing_its_tensors():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    module = Shared().eval()
    archive = read_torch_module(module)
    assert [layer.name for layer in archive.spec.layers] == ["fc", "relu", "fc_1"]
    assert archive.spec.layers[2].weight.key == "fc.weight"
    assert sorted(archive.tensors) == ["fc.bias", "fc.weight"]
    back = weightio.to_torch(archive)
    assert back.fc_1.weight is back.fc.weight
    x = torch.randn(3, 4)
    with torch.no_grad():
        np.testing.assert_array_equal(back(x).numpy(), module(x).numpy())


def test_untraceable_module_raises_trace_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(TraceError, match="could not trace .*Branchy"):
        read_torch_module(Branchy())


@pytest.mark.parametrize(("act", "match"), [
    (nn.Hardtanh(-2.0, 2.0), "min_val=-1"),
    (nn.Softplus(beta=2.0), "beta=1"),
    (nn.Softplus(threshold=5.0), "threshold >= 20"),
    (nn.Softmax(), "dim=None"),
    (nn.LogSoftmax(), "dim=None"),
])
def test_settings_without_exact_equivalent_are_refused(act, match):
    model = nn.Sequential(nn.Linear(3, 3), act)
    with pytest.raises(UnsupportedLayerError, match=match) as info:
        read_torch_module(model)
    assert info.value.layer == "1"


@pytest.mark.parametrize("fn", [
    lambda x: F.dropout(x, 0.5),
    lambda x: F.softmax(x, dim=-1, dtype=torch.float64),
    lambda x: F.hardtanh(x, 0.0, 1.0),
    lambda x: F.leaky_relu(x, negative_slope=x),
], ids=["dropout-always-on", "softmax-dtype", "hardtanh-range", "tensor-parameter"])
def test_functional_settings_without_exact_equivalent_are_refused(fn):
    with pytest.raises(UnsupportedLayerError):
        read_torch_module(WithFunction(fn))


def test_opaque_prelu_is_kept_and_refused_by_to_torch():
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.PReLU(6, init=0.3),
                                         nn.Linear(6, 2)))
    archive = read_torch_module(model)
    layer = archive.spec.layers[1]
    assert layer.kind == "opaque" and layer.source_class == "torch.nn.PReLU"
    assert layer.config["num_parameters"] == 6
    assert sorted(ref.key for ref in layer.tensors.values()) == ["1.weight"]
    assert list(archive.tensors) == list(model.state_dict())
    with pytest.raises(UnsupportedLayerError, match="PReLU") as info:
        to_torch(archive)
    assert info.value.layer == "1"
    with pytest.raises(UnsupportedLayerError):
        weightio.runtime.run(archive, sample(2, 4))


def test_opaque_module_with_example_input_archives(tmp_path):
    model = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, kernel_size=3, padding=1), nn.PReLU(4),
                                         nn.Flatten(), nn.Linear(4 * 5 * 5, 2)))
    archive = read_torch_module(model, example_input=torch.zeros(1, 3, 5, 5))
    assert archive.spec.inputs[0].shape == (3, 5, 5)
    assert archive.spec.inputs[0].layout == "channels_first"
    conv, prelu, flatten, _ = archive.spec.layers
    assert (conv.kind, prelu.kind, flatten.kind) == ("conv", "opaque", "flatten")
    assert prelu.source_class == "torch.nn.PReLU" and prelu.config["num_parameters"] == 4
    assert list(archive.tensors) == list(model.state_dict())
    save(archive, tmp_path / "conv.safetensors")
    back = load(tmp_path / "conv.safetensors", verify=True)
    assert back.spec.layers == archive.spec.layers


# -- load_into_torch ----------------------------------------------------------------------------


def _mlp(hidden: int = 6, dtype=torch.float32):
    return nn.Sequential(nn.Linear(4, hidden, dtype=dtype), nn.ReLU(),
                         nn.Linear(hidden, 2, dtype=dtype))


def test_load_into_torch_weights_only_and_full():
    source = seeded(_mlp)
    x = sample(5, 4)
    want = run_torch(source, [x])[0]
    for archive in (read_state_dict(source.state_dict()), read_torch_module(source)):
        target = seeded(_mlp, seed=1)
        assert not np.allclose(run_torch(target, [x])[0], want)
        load_into_torch(archive, target)
        assert_close(run_torch(target, [x])[0], want)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value)


def test_load_into_torch_by_order_across_names():
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(4, 6)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(torch.relu(self.encoder(x)))

    source = seeded(_mlp)
    target = seeded(Named, seed=2)
    load_into_torch(read_torch_module(source), target)
    x = sample(3, 4)
    assert_close(run_torch(target, [x])[0], run_torch(source, [x])[0])


def test_load_into_torch_reports_every_mismatch_and_copies_nothing():
    archive = read_state_dict(seeded(_mlp).state_dict())
    target = _mlp(hidden=7)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(StructureMismatchError) as info:
        load_into_torch(archive, target)
    message = str(info.value)
    for key in ("0.weight", "0.bias", "2.weight"):
        assert key in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    with pytest.raises(StructureMismatchError, match="unexpected key 'extra'"):
        load_into_torch(read_state_dict({**seeded(_mlp).state_dict(), "extra": torch.ones(1)}),
                        _mlp())
    with pytest.raises(StructureMismatchError, match="dtype F32 in the archive, F64"):
        load_into_torch(archive, _mlp(dtype=torch.float64))


def test_load_into_torch_full_archive_kind_and_count_mismatch():
    with_norm = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))
    with pytest.raises(StructureMismatchError, match="archive layer '1' vs target layer '2'"):
        load_into_torch(read_torch_module(with_norm), _mlp())
    deeper = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Linear(6, 2))
    with pytest.raises(StructureMismatchError, match="3 layers with weights"):
        load_into_torch(read_torch_module(deeper), _mlp())


# -- registries and imports -------------------------------------------------------------------


def test_registries_cover_the_spec():
    from weightio.spec.layers import LAYER_KINDS

    assert set(LAYER_KINDS) == set(TORCH_WRITE.keys())
    assert {"dense", "activation", "dropout", "identity"} <= TORCH_READ.kinds()
    for module_name in ("Linear", "ReLU", "Hardswish", "Dropout3d", "FeatureAlphaDropout",
                        "Identity", "Hardshrink"):
        assert f"torch.nn.{module_name}" in TORCH_READ
    for key in ("torch.nn.functional.relu", "torch.relu", "method:relu", "torch.softmax",
                "torch.nn.functional.dropout", "method:log_softmax"):
        assert key in TORCH_READ


def test_every_spec_activation_has_a_torch_module():
    from weightio.frameworks.torch.write.base import activation_module
    from weightio.spec.activations import ACTIVATION_PARAMETERS

    values = {"negative_slope": 0.2, "alpha": 0.5, "approximate": True, "axis": -1,
              "threshold": 0.3}
    x = sample(4, 5)
    for name in ActivationName.__args__:
        fn = ActivationFn(name=name, **{p: values[p] for p in ACTIVATION_PARAMETERS.get(name, ())})
        module = activation_module(fn, layer=name)
        got = run_torch(module, [x])[0]
        from weightio.runtime.activations import apply_activation

        assert_close(got, apply_activation(fn, x.astype(np.float64)), name)


def test_importing_the_adapter_does_not_import_torch():
    code = ("import sys, weightio.frameworks.torch.read, weightio.frameworks.torch.write, "
            "weightio.frameworks.torch.files.pickle, weightio.frameworks.torch.load, weightio.frameworks; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sequential_names_are_unique_after_replacing_dots():
    from weightio.frameworks.torch.write.build import ModuleNames

    namer = ModuleNames()
    assert [namer.take(n) for n in ("a.b", "a_b", "a.b_activation")] == [
        "a_b", "a_b_1", "a_b_activation"
    ]


@pytest.mark.parametrize("version", ["2.5.1", "2.5.1+cpu", "1.13.0", "garbage"])
def test_torch_load_refused_on_torch_with_known_weights_only_bypasses(version, tmp_path):
    """torch < 2.6 let a TorchScript archive run code through weights_only=True; weightio refuses
    to call torch.load there and names the way out."""
    from weightio.frameworks.torch.files.state_dict import check_safe_torch

    path = tmp_path / "model.pt"
    with pytest.raises(UnsafeFormatError, match="CVE-2025-32434") as info:
        check_safe_torch(version, path)
    assert "model.pt" in str(info.value) and "weightio.read" in str(info.value)


@pytest.mark.parametrize("version", ["2.6.0", "2.13.0+cpu", "3.0.0a0"])
def test_torch_load_allowed_on_fixed_torch(version, tmp_path):
    from weightio.frameworks.torch.files.state_dict import check_safe_torch

    check_safe_torch(version, tmp_path / "model.pt")


def test_layer_names_that_are_module_methods_still_build_and_run():
    """A layer called ``half``, ``eval`` or ``forward`` must not shadow nn.Module's own names."""
    from weightio.frameworks.torch.write.build import ModuleNames

    namer = ModuleNames()
    assert [namer.take(n) for n in ("half", "eval", "forward", "class", "0")] == [
        "half_1", "eval_1", "forward_1", "layer_class", "0"
    ]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    archive = weightio.read(net)
    spec = archive.spec
    renamed = [layer.model_copy(update={"name": name}) for layer, name in
               zip(spec.layers, ("half", "eval", "forward"))]
    archive = weightio.Archive(
        spec.model_copy(update={"layers": renamed, "outputs": [spec.outputs[0].model_copy(update={"layer": "forward"})]}),
        dict(archive.tensors),
    )
    x = sample(3, 4)
    module = weightio.to_torch(archive)
    assert_close(run_torch(net, [x])[0], run_torch(module, [x])[0])


def test_settings_the_spec_cannot_hold_are_a_typed_error():
    """A reader's pydantic refusal never reaches the user as pydantic's own ValidationError."""
    module = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3, eps=-1.0))
    with pytest.raises(SpecValidationError, match="eps") as info:
        read_torch_module(module)
    assert info.value.layer == "1"


def test_batch_norm_with_zero_eps_reads_and_runs():
    """torch allows eps=0 (weightio writes a Keras Normalization as one)."""
    module = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=0.0))).eval()
    with torch.no_grad():
        module[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 6, 6)
    archive = read_torch_module(module, example_input=x[:1])
    np.testing.assert_allclose(weightio.runtime.run(archive, x.numpy()), module(x).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_torch_load_path_refuses_a_key_whose_hash_never_ends(tmp_path):
    """A dict key of 40 levels of one shared tuple: ``hash()`` would walk 2**40 tuples inside
    torch's unpickler (C code, no timeout reaches it). weightio's own unpickler reads the file
    first and refuses it. Run in a child process so a regression fails instead of hanging."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "hostile"))
    from pickles import P, pt_zip

    p = P().empty_dict().empty_tuple().put(1000)
    for level in range(40):  # pair the tuple on top with itself (TUPLE2), 40 times
        p.get(1000 + level).raw(b"\x86").put(1000 + level + 1)
    path = pt_zip(tmp_path / "model.pt", p.int(1).setitem().done(), {})
    code = ("import sys; from weightio.frameworks.torch.files.state_dict import read_torch_file\n"
            "try:\n    read_torch_file(sys.argv[1])\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.startswith("MalformedFileError"), done.stdout + done.stderr
    assert "dict key" in done.stdout and "model.pt" in done.stdout
