"""What a saved Keras model holds -> an ``Archive``, without importing Keras or TensorFlow.

Input: the serialized model config (``keras.saving.serialize_keras_object(model)``, i.e. the
``config.json`` of a ``.keras`` zip) and each layer's arrays in ``layer.weights`` order (the
``vars/0, vars/1…`` order of the weights file). Keeping this free of Keras lets a TensorFlow-free
``.keras``/``.h5`` reader reuse it.

Every string in a config is treated as data: a module or class named there is never imported.
A layer class with no mapping, or a known class whose configuration has no *exact* canonical
equivalent (``ReLU(threshold=0.5)``, an activation the spec lacks, a custom activation), is kept
as ``opaque`` with its raw tensors and the reason in the layer's ``reason``.
Reading never fails for an unknown layer, so any model can still be archived, inspected and diffed;
converting or running it fails naming the layer. Only what would store wrong or misleading numbers
is refused outright (quantized layers, shared layers, malformed wiring).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from weightio.adapters.common import TensorCollector
from weightio.adapters.keras_activations import (
    KERAS_ACTIVATIONS,
    NotExact,
    activation_from_keras,
    short,
)
from weightio.adapters.keras_graph import (
    endpoint_names,
    functional_inputs,
    input_spec,
    policy_name,
    sequential_build_input,
)
from weightio.archive import Archive
from weightio.errors import MalformedFileError, UnsupportedLayerError, UnsupportedSourceError
from weightio.layouts import DENSE_KERNEL_TRANSPOSED, dense_weight_from_keras
from weightio.registry import Registry
from weightio.spec import (
    ActivationFn,
    ActivationLayer,
    AffineLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    InputSpec,
    LayerBase,
    ModelSpec,
    OpaqueLayer,
    OutputSpec,
    Provenance,
    spec_from_data,
)

__all__ = [
    "KERAS_ACTIVATIONS",
    "KERAS_READ",
    "KerasLayerEntry",
    "NotExact",
    "activation_from_keras",
    "archive_from_keras_config",
    "read_layer",
]



@dataclass
class KerasLayerEntry:
    """One Keras layer as the mapping functions see it: plain data only."""

    name: str
    class_name: str
    module: str | None
    config: dict[str, Any]
    weights: list[np.ndarray]
    inputs: list[str] | None
    #: The whole serialized layer (``build_config``, ``inbound_nodes``…), as data.
    raw: dict[str, Any] = field(default_factory=dict)
    #: Layout transforms a mapping applied; copied into provenance when it succeeds.
    transforms: list[str] = field(default_factory=list)
    #: ``channels``/``plain`` per source and for the output (``layout_flow``): is it a feature map?
    input_tags: list[str] = field(default_factory=list)
    output_tag: str = "plain"

    @property
    def source_class(self) -> str:
        """``keras.layers.Dense``-style name: module (as data, never imported) and class."""
        return f"{self.module}.{self.class_name}" if self.module else self.class_name


ReadFn = Callable[[KerasLayerEntry, TensorCollector], LayerBase]

#: Keras ``class_name`` -> function turning that layer into a spec layer.
KERAS_READ: Registry[ReadFn] = Registry("keras", "read")



def _base(entry: KerasLayerEntry) -> dict[str, Any]:
    return {"name": entry.name, "inputs": entry.inputs, "source_class": entry.source_class}


def _expect_weights(entry: KerasLayerEntry, count: int) -> None:
    if len(entry.weights) != count:
        raise NotExact(
            f"{entry.class_name} was expected to hold {count} weight(s) but holds "
            f"{len(entry.weights)} (LoRA or a subclass adds variables weightio cannot fold exactly)"
        )


_QUANTIZED_PREFIXES = ("int8", "int4", "float8", "gptq", "awq", "uint")


def _refuse_quantized(entry: KerasLayerEntry) -> None:
    """Quantized layers store integer/float8 kernels plus scales: refuse rather than mislabel."""
    policy_class, policy = policy_name(entry.config.get("dtype"))
    quantized = (
        (policy_class or "").startswith("Quantized")
        or policy.startswith(_QUANTIZED_PREFIXES)
        or entry.config.get("quantization_config") is not None
        or any(w.dtype.kind in "iu" or "float8" in w.dtype.name for w in entry.weights)
    )
    if quantized:
        raise UnsupportedLayerError(
            f"{entry.class_name} is quantized (dtype policy {policy!r}); weightio does not "
            "archive quantized Keras layers yet. Archive the float model before quantizing it",
            layer=entry.name,
        )


@KERAS_READ.register("Dense", produces=("dense",))
def _dense(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Keras kernel ``[in, out]`` -> canonical ``weight [out, in]``; bias as is."""
    _refuse_quantized(entry)
    use_bias = bool(entry.config.get("use_bias", True))
    _expect_weights(entry, 2 if use_bias else 1)
    kernel = entry.weights[0]
    if kernel.ndim != 2:
        raise NotExact(f"Dense kernel has shape {list(kernel.shape)}, expected [in, out]")
    activation = activation_from_keras(entry.config.get("activation"))
    weight = tensors.add(entry.name, "weight", dense_weight_from_keras(kernel))
    bias = tensors.add(entry.name, "bias", entry.weights[1]) if use_bias else None
    entry.transforms.append(DENSE_KERNEL_TRANSPOSED)
    return DenseLayer(
        **_base(entry),
        units=int(kernel.shape[1]),
        in_features=int(kernel.shape[0]),
        use_bias=use_bias,
        activation=activation,
        weight=weight,
        bias=bias,
    )


def _activation_layer(entry: KerasLayerEntry, fn: ActivationFn) -> ActivationLayer:
    _expect_weights(entry, 0)
    return ActivationLayer(**_base(entry), activation=fn)


@KERAS_READ.register("Activation", produces=("activation",))
def _activation(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Activation("relu")``: the named function with its defaults."""
    return _activation_layer(entry, activation_from_keras(entry.config.get("activation")))


def _number(config: dict[str, Any], key: str, default: float | None) -> float | None:
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotExact(f"{key}={short(value)} is not a number")
    return float(value)


@KERAS_READ.register("ReLU", produces=("activation",))
def _relu(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ReLU(max_value, negative_slope, threshold)``: exact only as relu, relu6 or leaky_relu."""
    max_value = _number(entry.config, "max_value", None)
    slope = _number(entry.config, "negative_slope", 0.0) or 0.0
    threshold = _number(entry.config, "threshold", 0.0) or 0.0
    if threshold == 0.0 and slope == 0.0 and max_value is None:
        fn = ActivationFn(name="relu")
    elif threshold == 0.0 and slope == 0.0 and max_value == 6.0:
        fn = ActivationFn(name="relu6")
    elif threshold == 0.0 and slope > 0.0 and max_value is None:
        fn = ActivationFn(name="leaky_relu", negative_slope=slope)
    else:
        raise NotExact(
            f"ReLU(max_value={max_value}, negative_slope={slope}, threshold={threshold}) is "
            "neither relu, relu6 nor leaky_relu"
        )
    return _activation_layer(entry, fn)


@KERAS_READ.register("LeakyReLU", produces=("activation",))
def _leaky_relu(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """The layer's default slope is 0.3 (the function's is 0.2); Keras 2 configs call it alpha."""
    key = "negative_slope" if "negative_slope" in entry.config else "alpha"
    slope = _number(entry.config, key, 0.3)
    return _activation_layer(entry, ActivationFn(name="leaky_relu", negative_slope=slope))


@KERAS_READ.register("ELU", produces=("activation",))
def _elu(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``ELU(alpha)``, default 1.0."""
    alpha = _number(entry.config, "alpha", 1.0)
    return _activation_layer(entry, ActivationFn(name="elu", alpha=alpha))


@KERAS_READ.register("Softmax", produces=("activation",))
def _softmax(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Softmax(axis)``; the axis counts the batch axis in both Keras and the spec."""
    axis = entry.config.get("axis", -1)
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise NotExact(f"Softmax over axis {short(axis)}: the spec takes one axis")
    return _activation_layer(entry, ActivationFn(name="softmax", axis=axis))


@KERAS_READ.register(
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    produces=("dropout",),
)
def _dropout(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Every dropout variant is the identity at inference; the rate is kept for the record."""
    _expect_weights(entry, 0)
    rate = _number(entry.config, "rate", None)
    if rate is None:
        raise NotExact(f"{entry.class_name} config has no rate")
    return DropoutLayer(**_base(entry), rate=rate)


@KERAS_READ.register("Identity", produces=("identity",))
def _identity(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Identity``: passes its input through."""
    _expect_weights(entry, 0)
    return IdentityLayer(**_base(entry))


_RESCALING_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def _config_array(value: Any, what: str) -> np.ndarray:
    """A config number, list or serialized ``__numpy__`` array, as a float64 array."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        value = (value.get("config") or {}).get("value")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NotExact(f"Rescaling {what}={short(value)} is not numeric") from None
    return array


@KERAS_READ.register("Rescaling", produces=("affine",))
def _rescaling(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """``Rescaling(scale, offset)`` with per-feature arrays -> ``affine`` in the compute dtype.

    Keras casts ``scale`` and ``offset`` to the layer's compute dtype before use, so the archive
    stores exactly those cast values. A scalar scale (image rescaling) stays opaque: the feature
    count is not in the layer's config.
    """
    _expect_weights(entry, 0)
    _, policy = policy_name(entry.config.get("dtype"))
    dtype = _RESCALING_DTYPES.get(policy or "float32")
    if dtype is None:
        raise NotExact(f"Rescaling computes in {policy!r}; weightio maps float16/32/64 only")
    scale = _config_array(entry.config.get("scale"), "scale")
    offset = _config_array(entry.config.get("offset", 0.0), "offset")
    if scale.ndim != 1:
        raise NotExact("a Rescaling with a scalar or multi-axis scale has no per-feature form")
    if offset.ndim == 0:
        offset = np.full_like(scale, float(offset))
    if offset.shape != scale.shape:
        raise NotExact(f"Rescaling offset shape {list(offset.shape)} differs from scale's")
    return AffineLayer(
        **_base(entry),
        features=int(scale.shape[0]),
        scale=tensors.add(entry.name, "scale", scale.astype(dtype)),
        offset=tensors.add(entry.name, "offset", offset.astype(dtype)),
    )


# -- opaque ---------------------------------------------------------------------------------


def plain_json(value: Any) -> Any:
    """Return ``value`` as strict JSON data (lists, not tuples; non-finite floats as strings)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return plain_json(value.item())
    return repr(value)


def opaque_layer(entry: KerasLayerEntry, tensors: TensorCollector, reason: str) -> OpaqueLayer:
    """Keep a layer as-is: its config as data, its arrays as ``var_0, var_1…`` in weight order."""
    refs = {f"var_{i}": tensors.add(entry.name, f"var_{i}", w) for i, w in enumerate(entry.weights)}
    return OpaqueLayer(
        **_base(entry), reason=reason, config=plain_json(entry.config), tensors=refs
    )


def read_layer(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Map one layer, or keep it opaque with the reason why.

    Each mapping writes into a scratch collector merged only on success, so a mapping that gives
    up half-way leaves no stray tensors behind.
    """
    fn = KERAS_READ.get(entry.class_name)
    if fn is None:
        reason = f"weightio has no mapping for Keras class {entry.class_name!r}"
    else:
        scratch = TensorCollector()
        try:
            layer = fn(entry, scratch)
        except NotExact as exc:
            reason = str(exc)
        except ValidationError as exc:
            first = exc.errors()[0]["msg"]
            reason = f"its config does not fit the {entry.class_name} mapping ({first})"
        else:
            for key, array in scratch.arrays.items():
                if key in tensors.arrays:
                    raise MalformedFileError(f"tensor {key!r} collected twice", layer=entry.name)
                tensors.arrays[key] = array
            return layer
    entry.transforms.clear()
    return opaque_layer(entry, tensors, reason)


# -- graph ------------------------------------------------------------------------------------
def archive_from_keras_config(
    model_config: Mapping[str, Any],
    layer_weights: Mapping[str, list[np.ndarray]],
    *,
    provenance: Provenance,
) -> Archive:
    """Turn a serialized Keras model and its per-layer arrays into an ``Archive``.

    Args:
        model_config: ``{"class_name": "Sequential"|"Functional", "config": {...}, ...}``.
        layer_weights: each layer's arrays in ``layer.weights`` order, by layer name.
        provenance: where it came from; the Dense transpose is added to its transforms here.

    Raises:
        UnsupportedSourceError: not a Sequential/Functional config, or a Sequential never built.
        UnsupportedLayerError: shared layers, quantized layers, multi-output layer wiring.
        MalformedFileError: a config that does not follow Keras's format.
    """
    model_config = dict(model_config)
    class_name = model_config.get("class_name")
    if class_name not in ("Sequential", "Functional", "Model"):
        raise UnsupportedSourceError(
            f"a Keras {class_name!r} is not a Sequential or Functional model; subclassed models "
            "have no graph to read. Rebuild it with the Functional API"
        )
    config = model_config.get("config") or {}
    layer_configs = config.get("layers")
    if not isinstance(layer_configs, list):
        raise MalformedFileError("the model config has no list of layers")
    sequential = class_name == "Sequential"
    tags, tag_sources = keras_read_conv.keras_tags(layer_configs, sequential=sequential)

    inputs: list[InputSpec] = []
    layers: list[LayerBase] = []
    transforms: list[str] = []
    tensors = TensorCollector()
    for raw in layer_configs:
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            raise MalformedFileError(f"a layer entry is not a serialized layer: {short(raw)}")
        layer_class = str(raw.get("class_name"))
        if layer_class == "InputLayer":
            inp = input_spec(raw)
            inputs.append(keras_read_conv.channels_input(inp) if tags.get(inp.name) == "channels" else inp)
            continue
        name = str(raw["config"].get("name") or raw.get("name") or "")
        entry = KerasLayerEntry(
            name=name,
            class_name=layer_class,
            module=raw.get("module") if isinstance(raw.get("module"), str) else None,
            config=raw["config"],
            weights=[np.asarray(w) for w in layer_weights.get(name, [])],
            inputs=None if sequential else functional_inputs(raw, name),
            raw=raw,
            input_tags=[tags.get(src, "plain") for src in tag_sources.get(name, [])],
            output_tag=tags.get(name, "plain"),
        )
        refusal = keras_read_conv.layout_refusal(entry)
        layers.append(
            read_layer(entry, tensors) if refusal is None else opaque_layer(entry, tensors, refusal)
        )
        transforms.extend(entry.transforms)

    if sequential and not inputs:
        built = sequential_build_input(model_config)
        if built is None:
            raise UnsupportedSourceError(
                "this Sequential model was never built, so its input shape is unknown; start it "
                "with keras.Input(shape=...) or call model.build((None, ...)) first"
            )
        if tags.get("input_layer") == "channels":
            built = keras_read_conv.channels_input(built)
        inputs.append(built)

    if sequential:
        outputs = [OutputSpec(name=layers[-1].name, layer=layers[-1].name)] if layers else []
    else:
        order = endpoint_names(config.get("input_layers", []))
        by_name = {inp.name: inp for inp in inputs}
        inputs = [by_name[n] for n in order if n in by_name] + [
            i for i in inputs if i.name not in order
        ]
        outputs = [
            OutputSpec(name=n, layer=n) for n in endpoint_names(config.get("output_layers", []))
        ]

    prov = provenance.model_copy(
        update={"transforms": sorted(set(provenance.transforms) | set(transforms))}
    )
    spec_data = {
        "name": str(config.get("name") or "keras_model"),
        "provenance": prov.model_dump(),
        "inputs": [i.model_dump() for i in inputs],
        "layers": [layer.model_dump() for layer in layers],
        "outputs": [o.model_dump() for o in outputs],
    }
    spec: ModelSpec = spec_from_data(spec_data)
    return Archive(spec, tensors.arrays)


# Family modules register into KERAS_READ (kept last: they import this module's helpers).
# Family modules register their Keras classes into KERAS_READ; imported once it exists.
from weightio.adapters import keras_read_conv  # noqa: E402
from weightio.adapters import keras_read_seq as _keras_read_seq  # noqa: E402,F401
