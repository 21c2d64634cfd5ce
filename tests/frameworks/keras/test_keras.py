"""Keras adapter: real Keras models, compared by their outputs against the archive and back."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from weightio.errors import (  # noqa: E402
    MalformedFileError,
    SourceNotFoundError,
    StructureMismatchError,
    UnsafeFormatError,
    UnsupportedLayerError,
    UnsupportedSourceError,
    WeightsOnlyArchiveError,
)
from weightio.format.store import load, save
from weightio.format.weights_only import archive_from_state_dict
from weightio.frameworks.keras.activations import KERAS_ACTIVATIONS
from weightio.frameworks.keras.load import load_into_keras
from weightio.frameworks.keras.model import read_keras_file, read_keras_model, run_keras, save_keras
from weightio.frameworks.keras.write.build import to_keras
from weightio.runtime.activations import apply_activation
from weightio.runtime.forward import run
from weightio.spec.activations import ActivationFn
from weightio.spec.model import Provenance

pytestmark = pytest.mark.keras

layers = keras.layers
RNG = np.random.default_rng(0)


# -- helpers ---------------------------------------------------------------------------------


def assert_close(got: np.ndarray, ref: np.ndarray, *, scale: float = 1e-5) -> None:
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    worst = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert worst <= scale * max(1.0, float(np.max(np.abs(ref)))), worst


def as_list(out: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return out if isinstance(out, list) else [out]


def seq(shape: tuple[int, ...], *stack, dtype: str = "float32", seed: int = 1) -> keras.Model:
    """A randomized Sequential model starting with ``keras.Input(shape)``."""
    return randomize(keras.Sequential([keras.Input(shape, dtype=dtype), *stack]), seed)


def randomize(model: keras.Model, seed: int = 1) -> keras.Model:
    """Non-trivial weights everywhere, including non-zero biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in weights])
    return model


def check_all_witnesses(model: keras.Model, xs: list[np.ndarray], *, scale: float = 1e-5):
    """Keras vs numpy runtime vs to_keras(archive): the three must agree."""
    archive = read_keras_model(model)
    ref = run_keras(model, xs)
    ours = as_list(run(archive, xs if len(xs) > 1 else xs[0]))
    rebuilt = to_keras(archive)
    again = run_keras(rebuilt, xs)
    assert len(ref) == len(ours) == len(again)
    for r, o, a in zip(ref, ours, again):
        assert_close(o, r, scale=scale)
        assert_close(a, r, scale=scale)
    return archive, rebuilt


def same_tensors(a, b) -> bool:
    return list(a.tensors) == list(b.tensors) and all(
        a.tensors[k].dtype == b.tensors[k].dtype
        and a.tensors[k].tobytes() == b.tensors[k].tobytes()
        for k in a.tensors
    )


# -- fixtures: trained models, built once ------------------------------------------------------


@pytest.fixture(scope="module")
def regressor() -> keras.Model:
    """The classic 10 -> 64 relu -> 32 relu -> 1 regressor, trained briefly."""
    keras.utils.set_random_seed(0)
    x = RNG.normal(size=(256, 10)).astype("float32")
    y = (x @ RNG.normal(size=(10, 1)) + 0.5).astype("float32")
    model = keras.Sequential(
        [
            keras.Input(shape=(10,), name="features"),
            layers.Dense(64, activation="relu", name="hidden1"),
            layers.Dense(32, activation="relu", name="hidden2"),
            layers.Dense(1, name="out"),
        ],
        name="regressor",
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def linear_fit() -> keras.Model:
    """Dense(16, relu) -> Dense(1) fitted to y = 2x + 5."""
    keras.utils.set_random_seed(1)
    x = np.linspace(-5, 15, 200, dtype="float32").reshape(-1, 1)
    model = keras.Sequential(
        [keras.Input(shape=(1,)), layers.Dense(16, activation="relu"), layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(x, 2 * x + 5, epochs=60, batch_size=200, verbose=0)
    return model


@pytest.fixture(scope="module")
def two_heads() -> keras.Model:
    inp = keras.Input(shape=(6,), name="signal")
    trunk = layers.Dense(12, activation="tanh", name="trunk")(inp)
    trunk = layers.Dropout(0.3, name="drop")(trunk)
    reg = layers.Dense(2, name="regression")(trunk)
    cls = layers.Dense(4, activation="softmax", name="classes")(trunk)
    return randomize(keras.Model(inp, [reg, cls], name="two_heads"))


# -- import hygiene ------------------------------------------------------------------------------


def test_mapping_and_adapter_modules_import_no_framework():
    code = (
        "import sys, weightio.frameworks.keras.read.model, weightio.frameworks.keras.model;"
        "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- graphs ------------------------------------------------------------------------------------


def test_sequential_with_input(regressor):
    x = RNG.normal(size=(32, 10)).astype("float32")
    archive, rebuilt = check_all_witnesses(regressor, [x])
    spec = archive.spec
    assert spec.is_chain and spec.name == "regressor"
    assert spec.inputs[0].name == "features" and spec.inputs[0].shape == (10,)
    assert [layer.name for layer in spec.layers] == ["hidden1", "hidden2", "out"]
    assert archive.tensors["hidden1.weight"].shape == (64, 10)
    assert spec.provenance.source_class == "keras.Sequential"
    assert spec.provenance.source_framework_version == keras.__version__
    assert any("transposed" in t for t in spec.provenance.transforms)
    assert isinstance(rebuilt, keras.Sequential)


def test_linear_fit_output_at_ten(linear_fit):
    archive = read_keras_model(linear_fit)
    x = np.array([[10.0]], dtype="float32")
    ours = run(archive, x)
    theirs = run_keras(linear_fit, [x])[0]
    assert_close(ours, theirs)
    assert ours.dtype == np.float32


def test_sequential_built_without_input():
    model = keras.Sequential([layers.Dense(5, activation="sigmoid"), layers.Dense(3)])
    model.build((None, 7))
    randomize(model)
    archive, _ = check_all_witnesses(model, [RNG.normal(size=(4, 7)).astype("float32")])
    assert archive.spec.inputs[0].shape == (7,)


def test_sequential_build_input_shape_without_input_layer_in_config():
    """Older configs carry no InputLayer, only build_input_shape."""
    model = seq((3,), layers.Dense(2, activation="relu", name="d"))
    config = keras.saving.serialize_keras_object(model)
    stored = config["config"]["layers"]
    config["config"]["layers"] = [c for c in stored if c["class_name"] != "InputLayer"]
    from weightio.frameworks.keras.read.model import archive_from_keras_config

    prov = read_keras_model(model).spec.provenance
    weights = {"d": [w.numpy() for w in model.layers[0].weights]}
    archive = archive_from_keras_config(config, weights, provenance=prov)
    assert archive.spec.inputs[0].shape == (3,)
    x = RNG.normal(size=(5, 3)).astype("float32")
    assert_close(run(archive, x), run_keras(model, [x])[0])


def test_unbuilt_sequential_is_refused():
    with pytest.raises(UnsupportedSourceError, match="never built"):
        read_keras_model(keras.Sequential([layers.Dense(2)]))


def test_functional_two_heads(two_heads):
    x = RNG.normal(size=(8, 6)).astype("float32")
    archive, rebuilt = check_all_witnesses(two_heads, [x])
    spec = archive.spec
    assert [o.name for o in spec.outputs] == ["regression", "classes"]
    assert spec.inputs[0].name == "signal"
    assert spec.layer("classes").inputs == ["drop"]
    assert not spec.is_chain
    assert len(rebuilt.outputs) == 2


def test_functional_keras2_node_format_reads_the_same(two_heads):
    """The Keras 2 inbound_nodes format ([[name, node, tensor, kwargs]]) wires the same graph."""
    from weightio.frameworks.keras.read.model import archive_from_keras_config

    config = keras.saving.serialize_keras_object(two_heads)
    for layer in config["config"]["layers"]:
        layer["inbound_nodes"] = [
            [[a["config"]["keras_history"][0], 0, 0, {}] for a in node["args"]]
            for node in layer["inbound_nodes"]
        ]
    weights = {layer.name: [w.numpy() for w in layer.weights] for layer in two_heads.layers}
    prov = read_keras_model(two_heads).spec.provenance
    archive = archive_from_keras_config(config, weights, provenance=prov)
    assert archive.spec.layers == read_keras_model(two_heads).spec.layers


def test_shared_layer_reads_as_one_layer_per_call():
    """Once refused; now each call is a spec layer reading one stored tensor
    (tests/frameworks/keras/test_shared_layers.py has the numbers)."""
    shared = layers.Dense(3, name="shared")
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], [shared(a), shared(b)])
    spec = read_keras_model(model).spec
    assert [layer.name for layer in spec.layers] == ["shared", "shared__call1"]
    assert spec.shared_tensors() == {"shared.weight": ["shared.weight", "shared__call1.weight"],
                                     "shared.bias": ["shared.bias", "shared__call1.bias"]}
    assert [o.layer for o in spec.outputs] == ["shared", "shared__call1"]


def test_functional_two_inputs_chain_per_input():
    a, b = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    outs = [layers.Dense(2, name="da")(a), layers.Dense(4, activation="elu", name="db")(b)]
    model = randomize(keras.Model([a, b], outs))
    xs = [RNG.normal(size=(5, 3)).astype("float32"), RNG.normal(size=(5, 2)).astype("float32")]
    archive, _ = check_all_witnesses(model, xs)
    assert [i.name for i in archive.spec.inputs] == ["left", "right"]


# -- activations -------------------------------------------------------------------------------

ALL_NAMES = sorted(KERAS_ACTIVATIONS)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_keras_activation_function_matches_reference(name):
    """Our table's parameters are what the Keras *function* computes with its defaults."""
    x = np.linspace(-7, 7, 281, dtype="float32").reshape(1, -1)
    theirs = keras.ops.convert_to_numpy(keras.activations.get(name)(x))
    ours = apply_activation(KERAS_ACTIVATIONS[name], x.astype(np.float64))
    assert_close(theirs, ours)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dense_activation_string(name):
    model = seq((4,), layers.Dense(6, activation=name, name="d"))
    x = (4 * RNG.normal(size=(16, 4))).astype("float32")
    archive, rebuilt = check_all_witnesses(model, [x])
    assert archive.spec.layers[0].activation == KERAS_ACTIVATIONS[name]
    assert [type(layer).__name__ for layer in rebuilt.layers] == ["Dense"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_activation_layer(name):
    model = seq((5,), layers.Dense(5), layers.Activation(name, name="act"))
    x = (4 * RNG.normal(size=(16, 5))).astype("float32")
    archive, _ = check_all_witnesses(model, [x])
    assert archive.spec.layer("act").kind == "activation"


def test_serialized_function_dict_is_read():
    """A config may hold {"module": "keras.activations", "class_name": "function", ...}."""
    from weightio.frameworks.keras.activations import activation_from_keras

    value = {
        "module": "keras.activations",
        "class_name": "function",
        "config": "gelu",
        "registered_name": "gelu",
    }
    assert activation_from_keras(value) == ActivationFn(name="gelu", approximate=False)
    fake = dict(value, module="my_package.activations")
    with pytest.raises(Exception, match="not a built-in"):
        activation_from_keras(fake)


STANDALONE = [
    (layers.ReLU(), ActivationFn(name="relu")),
    (layers.ReLU(max_value=6.0), ActivationFn(name="relu6")),
    (layers.ReLU(negative_slope=0.1), ActivationFn(name="leaky_relu", negative_slope=0.1)),
    (layers.LeakyReLU(), ActivationFn(name="leaky_relu", negative_slope=0.3)),
    (layers.LeakyReLU(negative_slope=0.05), ActivationFn(name="leaky_relu", negative_slope=0.05)),
    (layers.ELU(), ActivationFn(name="elu", alpha=1.0)),
    (layers.ELU(alpha=0.5), ActivationFn(name="elu", alpha=0.5)),
    (layers.Softmax(), ActivationFn(name="softmax", axis=-1)),
    (layers.Softmax(axis=1), ActivationFn(name="softmax", axis=1)),
]


@pytest.mark.parametrize("layer, expected", STANDALONE, ids=[e.describe() for _, e in STANDALONE])
def test_standalone_activation_layers(layer, expected):
    model = randomize(keras.Sequential([keras.Input((3, 4)), layers.Dense(4), layer]))
    x = (3 * RNG.normal(size=(6, 3, 4))).astype("float32")
    archive, _ = check_all_witnesses(model, [x])
    assert archive.spec.layers[1].activation == expected


def _dense_archive_with(activation: ActivationFn):
    model = randomize(keras.Sequential([keras.Input((4,)), layers.Dense(6, name="d")]))
    archive = read_keras_model(model)
    layer = archive.spec.layers[0].model_copy(update={"activation": activation})
    return archive.with_spec(archive.spec.model_copy(update={"layers": [layer]}))


@pytest.mark.parametrize(
    "activation",
    [
        ActivationFn(name="leaky_relu", negative_slope=0.01),
        ActivationFn(name="elu", alpha=0.3),
        ActivationFn(name="softmax", axis=1),
        ActivationFn(name="gelu", approximate=True),  # the keras.ops.gelu operation
    ],
    ids=lambda a: a.describe(),
)
def test_to_keras_non_default_parameters_use_exact_layers(activation):
    archive = _dense_archive_with(activation)
    model = to_keras(archive)
    x = (3 * RNG.normal(size=(9, 4))).astype("float32")
    assert_close(run_keras(model, [x])[0], run(archive, x))
    assert len(model.layers) == 2  # Dense + the exact standalone activation


@pytest.mark.parametrize(
    "activation",
    [
        ActivationFn(name="celu", alpha=2.0),
        ActivationFn(name="soft_shrink", threshold=0.1),
        ActivationFn(name="log_softmax", axis=0),
    ],
    ids=lambda a: a.describe(),
)
def test_to_keras_refuses_inexact_activation(activation):
    with pytest.raises(UnsupportedLayerError, match=activation.name) as info:
        to_keras(_dense_archive_with(activation))
    assert info.value.layer == "d"


def test_unknown_activation_is_kept_opaque_and_refused_by_name():
    model = seq((4,), layers.Dense(3, activation="exponential", name="expo"))
    archive = read_keras_model(model)
    layer = archive.spec.layer("expo")
    assert layer.kind == "opaque" and layer.config["activation"] == "exponential"
    assert "exponential" in (archive.spec.layer("expo").reason or "")
    assert set(layer.tensors) == {"var_0", "var_1"}
    with pytest.raises(UnsupportedLayerError, match="exponential") as info:
        to_keras(archive)
    assert info.value.layer == "expo"
    with pytest.raises(UnsupportedLayerError):
        run(archive, np.zeros((1, 4), "float32"))


def test_relu_with_threshold_is_kept_opaque():
    model = keras.Sequential([keras.Input((4,)), layers.ReLU(threshold=0.5, name="thr")])
    archive = read_keras_model(model)
    assert archive.spec.layer("thr").kind == "opaque"
    with pytest.raises(UnsupportedLayerError, match="threshold"):
        to_keras(archive)


# -- dropout, identity, dtypes ---------------------------------------------------------------------


def test_dropouts_are_inert():
    model = randomize(
        keras.Sequential(
            [
                keras.Input((3, 4)),
                layers.Dense(4, activation="relu"),
                layers.Dropout(0.5),
                layers.AlphaDropout(0.2),
                layers.GaussianDropout(0.3),
                layers.SpatialDropout1D(0.4),
                layers.Identity(name="same"),
                layers.Dense(2),
            ]
        )
    )
    x = RNG.normal(size=(5, 3, 4)).astype("float32")
    archive, rebuilt = check_all_witnesses(model, [x])
    kinds = [layer.kind for layer in archive.spec.layers]
    assert kinds == ["dense", "dropout", "dropout", "dropout", "dropout", "identity", "dense"]
    assert [layer.rate for layer in archive.spec.layers[1:5]] == [0.5, 0.2, 0.3, 0.4]


def test_float64_model_keeps_f64():
    model = seq(
        (4,),
        layers.Dense(8, activation="tanh", dtype="float64"),
        layers.Dense(2, dtype="float64"),
        dtype="float64",
    )
    x = RNG.normal(size=(6, 4))
    archive, rebuilt = check_all_witnesses(model, [x], scale=1e-12)
    assert {archive.tensors[k].dtype for k in archive.tensors} == {np.dtype("float64")}
    assert archive.spec.layers[0].weight.dtype == "F64"
    assert same_tensors(archive, read_keras_model(rebuilt))
    assert run_keras(rebuilt, [x])[0].dtype == np.float64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_round_trips_bit_exact(dtype):
    model = seq((4,), layers.Dense(3, activation="relu", dtype=dtype), dtype=dtype)
    archive = read_keras_model(model)
    assert str(archive.tensors[archive.spec.layers[0].weight.key].dtype) == dtype
    assert same_tensors(archive, read_keras_model(to_keras(archive)))


def test_quantized_dense_is_refused():
    model = randomize(keras.Sequential([keras.Input((8,)), layers.Dense(4, name="q")]))
    model.quantize("int8")
    with pytest.raises(UnsupportedLayerError, match="quantized") as info:
        read_keras_model(model)
    assert info.value.layer == "q"


# -- round trips and files -------------------------------------------------------------------------


def test_round_trip_is_bit_identical(regressor, two_heads):
    for model in (regressor, two_heads):
        archive = read_keras_model(model)
        again = read_keras_model(to_keras(archive))
        assert same_tensors(archive, again)
        assert [layer.model_dump(exclude={"source_class"}) for layer in archive.spec.layers] == [
            layer.model_dump(exclude={"source_class"}) for layer in again.spec.layers
        ]


def test_archive_file_round_trip(two_heads, tmp_path):
    archive = read_keras_model(two_heads)
    save(archive, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors", verify=True)
    x = RNG.normal(size=(3, 6)).astype("float32")
    for got, ref in zip(run_keras(to_keras(loaded), [x]), run_keras(two_heads, [x])):
        assert_close(got, ref)


def test_keras_file_read(two_heads, tmp_path):
    path = save_keras(two_heads, tmp_path / "heads.keras")
    assert path.is_file() and not [p for p in tmp_path.iterdir() if "weightio-tmp" in p.name]
    archive, model = read_keras_file(path)
    assert archive.spec.provenance.source_file == "heads.keras"
    assert len(archive.spec.provenance.source_digest) == len("blake3:") + 64
    x = RNG.normal(size=(4, 6)).astype("float32")
    for got, ref in zip(as_list(run(archive, x)), run_keras(two_heads, [x])):
        assert_close(got, ref)


def test_legacy_h5_file_read(regressor, tmp_path):
    path = tmp_path / "regressor.h5"
    regressor.save(path)
    archive, _ = read_keras_file(path)
    x = RNG.normal(size=(4, 10)).astype("float32")
    assert_close(run(archive, x), run_keras(regressor, [x])[0])


def test_file_errors(regressor, tmp_path):
    with pytest.raises(SourceNotFoundError):
        read_keras_file(tmp_path / "absent.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(MalformedFileError, match="bad.keras"):
        read_keras_file(bad)
    weights = tmp_path / "m.weights.h5"
    regressor.save_weights(weights)
    with pytest.raises(UnsupportedSourceError, match="architecture"):
        read_keras_file(weights)


def test_lambda_file_is_refused_as_unsafe(tmp_path):
    model = keras.Sequential([keras.Input((2,)), layers.Lambda(lambda t: t * 2.0)])
    path = tmp_path / "lam.keras"
    model.save(path)
    with pytest.raises(UnsafeFormatError, match="lam.keras"):
        read_keras_file(path)


def test_opaque_layer_kept_and_refused_by_name():
    model = seq(
        (4,), layers.Dense(4), layers.PReLU(name="prelu"), layers.LayerNormalization(name="norm")
    )
    archive = read_keras_model(model)
    prelu = archive.spec.layer("prelu")
    assert prelu.kind == "opaque" and prelu.source_class == "keras.layers.PReLU"
    assert list(prelu.tensors) == ["var_0"]
    assert np.array_equal(archive.tensors["prelu.var_0"], model.get_layer("prelu").get_weights()[0])
    norm = archive.spec.layer("norm")
    assert norm.kind == "layer_norm" and list(norm.tensor_refs()) == ["weight", "bias"]
    with pytest.raises(UnsupportedLayerError, match="PReLU") as info:
        to_keras(archive)
    assert info.value.layer == "prelu"


# -- load_into_keras ---------------------------------------------------------------------------


def _heads_like(units: int = 4, trunk: int = 12) -> keras.Model:
    inp = keras.Input(shape=(6,), name="x")
    h = layers.Dense(trunk, activation="tanh", name="t")(inp)
    heads = [layers.Dense(2, name="r")(h), layers.Dense(units, activation="softmax", name="c")(h)]
    return keras.Model(inp, heads)


def test_load_into_keras(two_heads):
    archive = read_keras_model(two_heads)
    target = _heads_like()
    load_into_keras(archive, target)
    x = RNG.normal(size=(5, 6)).astype("float32")
    for got, ref in zip(run_keras(target, [x]), run_keras(two_heads, [x])):
        assert_close(got, ref)


def test_load_into_keras_reports_every_mismatch(two_heads):
    archive = read_keras_model(two_heads)
    target = _heads_like(units=5, trunk=10)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(StructureMismatchError) as info:
        load_into_keras(archive, target)
    message = str(info.value)
    assert "'trunk'" in message and "'regression'" in message and "'classes'" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))


def test_weights_only_archive_is_refused_by_to_keras_and_paired_by_position_by_load_into():
    """A bare state dict builds no model; load_into pairs it by canonical position
    (tests/frameworks/test_load_across.py), and this one does not fit."""
    prov = Provenance(
        source_framework="torch", weightio_version="0", created_at="2024-01-01T00:00:00+00:00"
    )
    state = {"fc.weight": np.ones((2, 3), "float32")}
    archive = archive_from_state_dict(state, name="sd", provenance=prov)
    with pytest.raises(WeightsOnlyArchiveError):
        to_keras(archive)
    with pytest.raises(StructureMismatchError, match="'fc.weight' \\[2, 3\\] F32 vs Keras model"):
        load_into_keras(archive, _heads_like())


def test_custom_activation_function_is_kept_opaque():
    @keras.saving.register_keras_serializable(package="weightio_test")
    def doubled_relu(x):
        return 2.0 * keras.activations.relu(x)

    model = seq((3,), layers.Dense(2, activation=doubled_relu, name="custom"))
    archive = read_keras_model(model)
    assert archive.spec.layer("custom").kind == "opaque"
    # Keras serializes a registered function as the string "package>name".
    assert "weightio_test>doubled_relu" in (archive.spec.layer("custom").reason or "")
    with pytest.raises(UnsupportedLayerError) as info:
        to_keras(archive)
    assert info.value.layer == "custom"


def test_functional_with_inserted_activation_layer_keeps_wiring(two_heads):
    """A Dense whose activation needs a standalone layer: consumers read the activation's output."""
    archive = read_keras_model(two_heads)
    leaky = ActivationFn(name="leaky_relu", negative_slope=0.1)
    new_layers = [
        layer.model_copy(update={"activation": leaky}) if layer.name == "trunk" else layer
        for layer in archive.spec.layers
    ]
    archive = archive.with_spec(archive.spec.model_copy(update={"layers": new_layers}))
    model = to_keras(archive)
    x = RNG.normal(size=(7, 6)).astype("float32")
    for got, ref in zip(run_keras(model, [x]), as_list(run(archive, x))):
        assert_close(got, ref)
    assert "trunk_leaky_relu" in [layer.name for layer in model.layers]
