"""The spec validates itself: inconsistent specs fail with the path of every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightio.errors import SpecValidationError
from weightio.spec import json_schema, spec_from_data
from weightio.spec.activations import ActivationFn

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "model-spec.schema.json"


def _ref(key: str, shape: list[int], dtype: str = "F32") -> dict:
    return {"key": key, "shape": shape, "dtype": dtype}


def _spec(**overrides: object) -> dict:
    data = {
        "name": "m",
        "provenance": {"source_framework": "weightio", "weightio_version": "0", "created_at": "t"},
        "inputs": [{"name": "x", "shape": [4]}],
        "layers": [
            {
                "kind": "dense",
                "name": "fc1",
                "units": 3,
                "in_features": 4,
                "weight": _ref("fc1.weight", [3, 4]),
                "bias": _ref("fc1.bias", [3]),
            },
            {"kind": "activation", "name": "act", "activation": {"name": "relu"}},
        ],
        "outputs": [{"name": "y", "layer": "act"}],
    }
    data.update(overrides)
    return data


def test_valid_chain() -> None:
    spec = spec_from_data(_spec())
    assert spec.is_chain
    assert spec.topological_order() == [0, 1]
    assert [p for _, p, _ in spec.tensor_refs()] == ["weight", "bias"]


def test_dense_weight_shape_must_match_units() -> None:
    data = _spec()
    data["layers"][0]["weight"] = _ref("fc1.weight", [4, 3])
    with pytest.raises(SpecValidationError, match=r"layers\.0\.dense.*\[units, in_features\]") as info:
        spec_from_data(data)
    assert info.value.layer == "fc1"


def test_use_bias_must_agree_with_bias() -> None:
    data = _spec()
    data["layers"][0]["use_bias"] = False
    with pytest.raises(SpecValidationError, match="use_bias=False but bias is present"):
        spec_from_data(data)


def test_unknown_input_and_output_names_are_all_reported() -> None:
    data = _spec()
    data["layers"][1]["inputs"] = ["nope"]
    data["outputs"] = [{"name": "y", "layer": "missing"}]
    with pytest.raises(SpecValidationError) as info:
        spec_from_data(data)
    assert "unknown input 'nope'" in str(info.value)
    assert "unknown layer 'missing'" in str(info.value)


def test_cycle_is_rejected() -> None:
    data = _spec()
    data["layers"][0]["inputs"] = ["act"]
    data["layers"][1]["inputs"] = ["fc1"]
    with pytest.raises(SpecValidationError, match="cycle"):
        spec_from_data(data)


def test_duplicate_names_and_keys_rejected() -> None:
    data = _spec()
    data["layers"][1]["name"] = "fc1"
    with pytest.raises(SpecValidationError, match="used twice"):
        spec_from_data(data)


def test_unknown_kind_is_rejected_but_opaque_accepted() -> None:
    data = _spec()
    data["layers"][1] = {"kind": "wormhole", "name": "w"}
    with pytest.raises(SpecValidationError, match="wormhole"):
        spec_from_data(data)
    data["layers"][1] = {
        "kind": "opaque",
        "name": "w",
        "source_class": "keras.layers.PReLU",
        "tensors": {"alpha": _ref("w.alpha", [3])},
        "config": {"shared_axes": None},
    }
    data["outputs"] = [{"name": "y", "layer": "w"}]
    assert spec_from_data(data).layers[1].kind == "opaque"


def test_dag_order_is_topological() -> None:
    data = _spec()
    data["layers"] = [data["layers"][1], data["layers"][0]]
    data["layers"][0]["inputs"] = ["fc1"]
    data["layers"][1]["inputs"] = ["x"]
    spec = spec_from_data(data)
    assert not spec.is_chain
    assert [spec.layers[i].name for i in spec.topological_order()] == ["fc1", "act"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "leaky_relu"}, "needs negative_slope"),
        ({"name": "relu", "alpha": 1.0}, "takes no alpha"),
        ({"name": "softmax"}, "needs axis"),
    ],
)
def test_activation_parameters_are_explicit(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActivationFn(**kwargs)


def test_extra_fields_are_rejected() -> None:
    data = _spec()
    data["layers"][0]["kernel_size"] = 3
    with pytest.raises(SpecValidationError, match="kernel_size"):
        spec_from_data(data)


def test_committed_schema_matches_code() -> None:
    """schema/ is the contract for other languages; regenerate with `weightio schema --out`."""
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == json_schema(), (
        "schema/model-spec.schema.json is stale: run "
        "`weightio schema --out schema/model-spec.schema.json`"
    )
