"""Nested Keras models (a model used as a layer: transfer learning) are read as their layers.

Each inner layer is named ``<model>/<layer>``; the graph reads through the nested model's
inputs and outputs. Sequential in Functional, Functional in Sequential and a model nested
twice are read from the live model and from its ``.keras`` file (also where Keras cannot be
imported), then run in numpy, PyTorch and Keras written back, against Keras.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402
from test_applications import perturb  # noqa: E402  (the applications tests' calibrated perturbation)
from test_keras_write import run_without_keras  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

L = keras.layers


def _randomized(model: Any, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.standard_normal(tuple(variable.shape))
        if variable.path.endswith("variance"):
            value = rng.uniform(0.5, 1.5, tuple(variable.shape))
        variable.assign(value.astype("float32"))
    return model


def sequential_in_functional() -> Any:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="relu", name="d1"),
                              L.Dense(2, name="d2")], name="inner")
    x = keras.Input((4,), name="x")
    h = L.Dense(4, name="pre")(x)
    return keras.Model(x, L.Dense(1, name="post")(inner(h)), name="outer")


def functional_in_sequential() -> Any:
    """A Functional base with a residual branch, a head after it in a Sequential (no Input)."""
    i = keras.Input((6, 6, 2), name="image")
    c = L.Conv2D(2, 3, padding="same", name="conv")(i)
    c = L.BatchNormalization(name="bn")(c)
    base = keras.Model(i, L.Add(name="residual")([i, c]), name="base")
    model = keras.Sequential([base, L.GlobalAveragePooling2D(name="gap"), L.Dropout(0.2, name="drop"),
                              L.Dense(3, name="head")], name="classifier")
    model.build((None, 6, 6, 2))
    return model


def base_called_in_functional() -> Any:
    """The transfer-learning recipe: ``base(inputs, training=False)`` then a new head."""
    i = keras.Input((6, 6, 2))
    c = L.BatchNormalization(name="bn")(L.Conv2D(3, 3, padding="same", name="conv")(i))
    base = keras.Model(i, L.ReLU(name="relu")(c), name="base")
    inputs = keras.Input((6, 6, 2), name="image")
    x = base(inputs, training=False)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(L.Dropout(0.2, name="drop")(x)), name="transfer")


def doubly_nested() -> Any:
    """Functional(Sequential(Functional)): ``outer/middle/core/dense``."""
    ci = keras.Input((5,))
    core = keras.Model(ci, L.Dense(4, activation="tanh", name="dense")(ci), name="core")
    middle = keras.Sequential([keras.Input((5,)), core, L.Dense(3, name="after")], name="middle")
    x = keras.Input((5,), name="x")
    left = middle(x)
    right = L.Dense(3, name="side")(x)
    return keras.Model(x, L.Concatenate(name="cat")([left, right]), name="outer")


def functional_last() -> Any:
    """A nested Functional model giving the outer model's output: Keras numbers that call 1
    in ``output_layers`` (0 in ``inbound_nodes``)."""
    i = keras.Input((4,))
    inner = keras.Model(i, L.LayerNormalization(name="norm")(L.Dense(3, name="d")(i)), name="tail")
    x = keras.Input((4,), name="x")
    return keras.Model(x, inner(L.Dense(4, name="pre")(x)), name="outer")


MODELS = {
    "functional_last": (functional_last, (4,)),
    "sequential_in_functional": (sequential_in_functional, (4,)),
    "functional_in_sequential": (functional_in_sequential, (6, 6, 2)),
    "doubly_nested": (doubly_nested, (5,)),
    "base_called_in_functional": (base_called_in_functional, (6, 6, 2)),
}
NAMES = {
    "functional_last": ["pre", "tail/d", "tail/norm"],
    "sequential_in_functional": ["pre", "inner/d1", "inner/d2", "post"],
    "functional_in_sequential": ["base/conv", "base/bn", "base/residual", "gap", "drop", "head"],
    "doubly_nested": ["middle/core/dense", "middle/after", "side", "cat"],
    "base_called_in_functional": ["base/conv", "base/bn", "base/relu", "gap", "drop", "head"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, np.ndarray, Path]]:
    folder = tmp_path_factory.mktemp("nested")
    result = {}
    for name, (build, shape) in MODELS.items():
        model = _randomized(build())
        x = np.random.default_rng(1).standard_normal((3, *shape)).astype("float32")
        model.save(folder / f"{name}.keras")
        model.save(folder / f"{name}.h5")  # legacy: a nested model's arrays in one group
        result[name] = (model, x, folder / f"{name}.keras")
    return result


def _spatial(x: np.ndarray) -> bool:
    return x.ndim == 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_nested_model_reads_as_its_layers_and_matches(name: str, built: dict) -> None:
    model, x, _ = built[name]
    reference = np.asarray(model(x, training=False))
    archive = weightio.read(model)
    names = [layer.name for layer in archive.spec.layers if layer.source_class != "weightio.layout_move"]
    assert names == NAMES[name]
    assert not [layer.name for layer in archive.spec.layers if layer.kind == "opaque"]
    canonical = np.moveaxis(x, -1, 1) if _spatial(x) else x
    assert_close(reference, weightio.run(archive, canonical))
    module = weightio.to_torch(archive)
    with torch.no_grad():
        assert_close(reference, module(torch.from_numpy(canonical)).numpy())
    back = weightio.to_keras(archive)
    assert_close(reference, np.asarray(back(x, training=False)))
    again = weightio.read(module, example_input=torch.from_numpy(canonical[:1]))
    assert_close(reference, np.asarray(weightio.to_keras(again)(x, training=False)))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_nested_model_file_reads_as_the_live_model(name: str, suffix: str, built: dict) -> None:
    model, _, path = built[name]
    live, stored = weightio.read(model), weightio.read(path.with_suffix(suffix))
    assert [layer.name for layer in stored.spec.layers] == [layer.name for layer in live.spec.layers]
    assert list(stored.tensors) == list(live.tensors)
    for key in live.tensors:
        assert np.array_equal(stored.tensors[key], live.tensors[key]), key


def test_nested_model_files_read_without_keras(built: dict) -> None:
    """The Keras-free reader inlines nested models by itself, arrays and all."""
    paths = {name: str(path) for name, (_, _, path) in built.items()}
    inputs = {name: x.tolist() for name, (_, x, _) in built.items()}
    output = run_without_keras(f"""
import json, numpy as np, weightio
out = {{}}
for name, path in {paths!r}.items():
    archive = weightio.read(path)
    x = np.asarray({inputs!r}[name], dtype="float32")
    if x.ndim == 4:
        x = np.moveaxis(x, -1, 1)
    y = weightio.run(archive, x)
    out[name] = [[l.name for l in archive.spec.layers if l.source_class != "weightio.layout_move"],
                 np.asarray(y).tolist()]
print(json.dumps(out))
""")
    found = json.loads(output.splitlines()[-1])
    for name, (model, x, _) in built.items():
        names, y = found[name]
        assert names == NAMES[name]
        assert_close(np.asarray(model(x, training=False)), np.asarray(y, dtype="float32"))


def test_a_nested_model_called_twice_is_refused_by_name() -> None:
    inner = keras.Sequential([keras.Input((3,)), L.Dense(3, name="shared")], name="inner")
    x = keras.Input((3,))
    model = keras.Model(x, inner(inner(x)))
    with pytest.raises(UnsupportedLayerError, match="called 2 times") as info:
        weightio.read(model)
    assert info.value.layer == "inner"


def test_load_into_a_nested_model() -> None:
    """``load_into`` finds a nested model's layers by their ``outer/inner`` names."""
    source = _randomized(functional_in_sequential(), seed=4)
    target = _randomized(functional_in_sequential(), seed=5)
    x = np.random.default_rng(2).standard_normal((2, 6, 6, 2)).astype("float32")
    weightio.load_into(weightio.read(source), target)
    assert_close(np.asarray(source(x, training=False)), np.asarray(target(x, training=False)))


def test_a_layer_name_repeating_a_nested_path_is_refused() -> None:
    """A file whose own layer is named ``inner/d1`` beside a nested ``inner`` holding ``d1``
    would give two layers one name: refused, typed, before anything is mapped."""
    from weightio.errors import MalformedFileError
    from weightio.frameworks.keras.read.nested import inline_nested

    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d1")], name="inner")
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(3, name="post")(inner(x)))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model), default=list))
    post = next(raw for raw in config["config"]["layers"] if raw["name"] == "post")
    post["name"] = post["config"]["name"] = "inner/d1"
    with pytest.raises(MalformedFileError) as info:
        inline_nested(config, {})
    assert info.value.layer == "inner/d1"


def test_a_nested_model_with_two_inputs_and_two_outputs() -> None:
    """Its inputs bind to the tensors passed in order; output ``k`` is read where used."""
    a, b = keras.Input((4,)), keras.Input((4,))
    s = L.Add(name="s")([L.Dense(3, name="da")(a), L.Dense(3, name="db")(b)])
    two = keras.Model([a, b], [s, L.Dense(2, name="o2")(s)], name="two")
    x, y = keras.Input((4,), name="x"), keras.Input((4,), name="y")
    p, q = two([x, y])
    model = _randomized(keras.Model([x, y], L.Concatenate(name="cat")([L.Dense(2, name="pp")(p), q])))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((3, 4)).astype("float32") for _ in range(2)]
    reference = np.asarray(model(xs))
    archive = weightio.read(model)
    assert [layer.name for layer in archive.spec.layers] == ["two/da", "two/db", "two/s", "two/o2", "pp", "cat"]
    assert archive.spec.layer("two/da").inputs == ["x"] and archive.spec.layer("two/db").inputs == ["y"]
    assert_close(reference, weightio.run(archive, xs))
    with torch.no_grad():
        assert_close(reference, weightio.to_torch(archive)(*map(torch.from_numpy, xs)).numpy())
    assert_close(reference, np.asarray(weightio.to_keras(archive)(xs)))


@pytest.mark.parametrize("edit", ["history_node_not_int", "inbound_nodes_not_list", "endpoint_not_ref"])
def test_malformed_nested_configs_are_typed_refusals(edit: str) -> None:
    """A config a file could hold, broken where the inliner reads it: MalformedFileError."""
    from weightio.errors import MalformedFileError
    from weightio.frameworks.keras.read.nested import inline_nested

    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d1")], name="inner")
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(3, name="post")(inner(x)))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model), default=list))
    by_name = {raw["name"]: raw for raw in config["config"]["layers"]}
    if edit == "history_node_not_int":
        by_name["post"]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][1] = "Sequential"
    elif edit == "inbound_nodes_not_list":
        by_name["inner"]["inbound_nodes"] = True
    else:
        config["config"]["output_layers"] = ["post", {"a": 1}, 0]
    with pytest.raises(MalformedFileError):
        inline_nested(config, {})


def _structure(model: Any) -> list[Any]:
    """Each layer's name, and for a nested model its own structure; InputLayers left out (a
    Sequential lists none, and the rebuilt nested model's Input takes a fresh name).
    """
    return [
        (layer.name, type(layer).__name__, _structure(layer)) if isinstance(layer, keras.Model)
        else layer.name
        for layer in model.layers if not isinstance(layer, L.InputLayer)
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_nested_models_are_rebuilt_nested_and_survive_keras_files(
    name: str, built: dict, tmp_path: Path
) -> None:
    """``outer/inner`` names become a nested model ``outer`` again: the same structure (names
    and Sequential/Functional at every depth) and numbers, live, from its ``.keras`` and from ``model.weights.h5``.
    """
    model, x, _ = built[name]
    reference = np.asarray(model(x, training=False))
    back = weightio.to_keras(weightio.read(model), nested=True)
    assert _structure(back) == _structure(model)  # names and classes at every depth
    assert type(back).__name__ == type(model).__name__
    assert_close(reference, np.asarray(back(x, training=False)))
    back.save(tmp_path / "back.keras")
    loaded = keras.saving.load_model(tmp_path / "back.keras")
    assert _structure(loaded) == _structure(model)
    assert_close(reference, np.asarray(loaded(x, training=False)))
    back.save_weights(tmp_path / "model.weights.h5")
    fresh = weightio.to_keras(weightio.read(model), nested=True)
    for variable in fresh.weights:
        variable.assign(np.zeros(tuple(variable.shape), "float32"))
    fresh.load_weights(tmp_path / "model.weights.h5")
    assert_close(reference, np.asarray(fresh(x, training=False)))


def test_the_flat_form_stays_available(built: dict) -> None:
    model, x, _ = built["doubly_nested"]
    flat = weightio.to_keras(weightio.read(model), nested=False)
    assert not [layer for layer in flat.layers if isinstance(layer, keras.Model)]
    assert "middle_core_dense" in [layer.name for layer in flat.layers]
    assert_close(np.asarray(model(x)), np.asarray(flat(x)))


def test_a_nested_model_with_two_inputs_and_two_outputs_is_rebuilt_nested() -> None:
    a, b = keras.Input((4,)), keras.Input((4,))
    s = L.Add(name="s")([L.Dense(3, name="da")(a), L.Dense(3, name="db")(b)])
    two = keras.Model([a, b], [s, L.Dense(2, name="o2")(s)], name="two")
    x, y = keras.Input((4,), name="x"), keras.Input((4,), name="y")
    p, q = two([x, y])
    model = _randomized(keras.Model([x, y], L.Concatenate(name="cat")([L.Dense(2, name="pp")(p), q])))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((3, 4)).astype("float32") for _ in range(2)]
    back = weightio.to_keras(weightio.read(model), nested=True)
    assert isinstance(back.get_layer("two"), keras.Model)
    assert [layer.name for layer in back.get_layer("two").layers if not isinstance(layer, L.InputLayer)] == [
        "da", "db", "s", "o2"]
    assert_close(np.asarray(model(xs)), np.asarray(back(xs)))


def test_a_group_that_is_not_a_clean_sub_graph_is_kept_flat_or_refused() -> None:
    """``g/a -> mid -> g/b``: ``mid`` runs between two of ``g``'s layers, so ``g`` cannot be one
    nested model: the flat model with a warning, or NestingError naming ``g`` when required.
    """
    from weightio.frameworks.keras.write.nesting import NestingError, nest_model

    x = keras.Input((3,), name="x")
    model = _randomized(keras.Model(x, L.Dense(2, name="b")(L.Dense(3, name="mid")(L.Dense(3, name="a")(x)))))
    paths = {"a": ("g", "a"), "mid": ("mid",), "b": ("g", "b")}
    with pytest.warns(UserWarning, match="not one clean sub-graph"):
        flat = nest_model(keras, model, paths, strict=False)
    assert [layer.name for layer in flat.layers] == ["x", "a", "mid", "b"]
    with pytest.raises(NestingError) as info:
        nest_model(keras, model, paths, strict=True)
    assert info.value.layer == "g"
    data = np.random.default_rng(0).standard_normal((2, 3)).astype("float32")
    assert_close(np.asarray(model(data)), np.asarray(flat(data)))


def test_torch_keeps_the_nesting_as_submodules(built: dict) -> None:
    """``middle/core/dense`` is the submodule ``middle.core.dense``: state-dict keys keep the
    nesting, and the module computes what Keras and the numpy runtime do.
    """
    model, x, _ = built["doubly_nested"]
    archive = weightio.read(model)
    module = weightio.to_torch(archive)
    assert isinstance(module.get_submodule("middle.core"), torch.nn.Module)
    assert {"middle.core.dense.weight", "middle.after.weight", "side.weight"} <= set(module.state_dict())
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy()
    assert_close(np.asarray(model(x)), out)
    assert_close(weightio.run(archive, x), out)


@pytest.mark.slow
def test_mobilenetv2_transfer_model_keeps_its_base_as_a_nested_model() -> None:
    """The transfer-learning recipe with perturbed BN statistics: archive -> torch (a nested
    submodule) and archive -> Keras (the base a Model again, same layer names), all matching.
    """
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    model = keras.Sequential([base, L.GlobalAveragePooling2D(name="gap"),
                              L.Dropout(0.2, name="drop"), L.Dense(4, name="head")])
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype("float32")
    # batch-norm statistics, betas, gammas and biases perturbed and calibrated on another batch
    # (N(0, 1) weights everywhere made ReLU6 stacks amplify rounding past any tolerance)
    calibration = np.random.default_rng(3).standard_normal((8, 32, 32, 3)).astype("float32")
    perturb(model, seed=0, calibration=calibration)
    reference = np.asarray(model(x, training=False))
    archive = weightio.read(model)
    module = weightio.to_torch(archive)
    # its torch submodule: the name with non-word characters as _ (mobilenetv2_1_00_32)
    assert isinstance(module.get_submodule(re.sub(r"\W", "_", base.name)), torch.nn.Module)
    assert_close(reference, weightio.run(archive, np.moveaxis(x, -1, 1)))
    back = weightio.to_keras(archive, nested=True)
    assert isinstance(back.get_layer(base.name), keras.Model)
    assert _structure(back.get_layer(base.name)) == _structure(base)
    assert_close(reference, np.asarray(back(x, training=False)))
    with torch.no_grad():
        assert_close(reference, module(torch.from_numpy(np.moveaxis(x, -1, 1))).numpy())
    # Keras -> PyTorch -> Keras: the torch module read back names its layers
    # '<base>/<layer>' again (NestedModel groups), so the base is a nested Model once more
    again = weightio.to_keras(weightio.read(module, example_input=torch.from_numpy(np.moveaxis(x, -1, 1))),
                              nested=True)
    rebuilt = again.get_layer(base.name)
    assert isinstance(rebuilt, keras.Model)
    # the user's classes at both levels: a Sequential around the Functional base
    assert [type(m).__name__ for m in (back, again, rebuilt)] == ["Sequential"] * 2 + ["Functional"]
    weighted = {layer.name for layer in base.layers if layer.weights}
    assert weighted <= {layer.name for layer in rebuilt.layers}
    assert_close(reference, np.asarray(again(x, training=False)))
