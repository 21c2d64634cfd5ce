"""``Archive`` -> ``keras.Model``: one small function per spec kind, found in ``KERAS_WRITE``.

Activations are written exactly or not at all: a Keras activation string is used only when the
Keras *function's* defaults equal the spec's parameters; otherwise an exact standalone layer
follows (``LeakyReLU(negative_slope=…)``, ``ELU(alpha=…)``, ``Softmax(axis=…)``); where Keras
has no exact equivalent (gelu's tanh approximation, celu with alpha != 1, shrinks with another
threshold, log_softmax on another axis) the layer is refused by name. Keras is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightio.adapters.common import require
from weightio.adapters.keras_activations import KERAS_ACTIVATIONS
from weightio.archive import Archive
from weightio.errors import UnsupportedLayerError, WeightsOnlyArchiveError
from weightio.layouts import dense_weight_to_keras
from weightio.registry import Registry
from weightio.spec import (
    ActivationFn,
    ActivationLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    LayerBase,
    OpaqueLayer,
)
from weightio.spec.merge import MULTI_INPUT_KINDS

#: safetensors dtype name -> Keras dtype string (floating types a Keras layer can compute in).
_KERAS_FLOAT = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_KERAS_ANY = {
    **_KERAS_FLOAT,
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}


@dataclass
class WriteContext:
    """What a writer needs besides its layer: Keras, the archive, names and the flowing dtype."""

    keras: Any
    archive: Archive
    dtype: str
    names: NameAllocator
    #: Form of the flowing tensor: "channels" (a channels-last feature map) or "plain".
    layout: str = "plain"


@dataclass
class NameAllocator:
    """Keras layer names: the spec's where Keras accepts them, unique, chosen deterministically.

    Keras 3 rejects only ``/`` in names (the spec already forbids it); it is replaced by ``_``
    defensively. Names the spec uses are reserved first so an inserted activation layer never
    takes a later layer's name.
    """

    used: set[str] = field(default_factory=set)
    by_spec: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def clean(name: str) -> str:
        """Replace the characters Keras rejects."""
        return name.replace("/", "_") or "layer"

    def reserve(self, spec_name: str) -> str:
        """Give ``spec_name`` its Keras name (itself when valid and free)."""
        name = self.fresh(self.clean(spec_name))
        self.by_spec[spec_name] = name
        return name

    def fresh(self, base: str) -> str:
        """Return ``base``, or ``base_1``, ``base_2``… whichever is free, and mark it used."""
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


WriteFn = Callable[[LayerBase, WriteContext], list[Any]]

#: Spec kind -> function returning the Keras layers (applied in order) computing that layer.
KERAS_WRITE: Registry[WriteFn] = Registry("keras", "write")


def keras_activation_name(fn: ActivationFn) -> str | None:
    """The Keras activation string computing ``fn`` with Keras's defaults, or None."""
    for name, known in KERAS_ACTIVATIONS.items():
        if known == fn:
            return name
    return None


def standalone_activation(
    fn: ActivationFn, *, name: str, dtype: str, ctx: WriteContext, layer: str
) -> Any:
    """An exact Keras layer computing ``fn``; refuse where Keras 3 has none."""
    layers = ctx.keras.layers
    as_string = keras_activation_name(fn)
    if as_string is not None:
        return layers.Activation(as_string, name=name, dtype=dtype)
    if fn.name == "leaky_relu" and fn.negative_slope is not None and fn.negative_slope >= 0:
        return layers.LeakyReLU(negative_slope=fn.negative_slope, name=name, dtype=dtype)
    if fn.name == "elu":
        return layers.ELU(alpha=fn.alpha, name=name, dtype=dtype)
    if fn.name == "softmax":
        return layers.Softmax(axis=fn.axis, name=name, dtype=dtype)
    raise UnsupportedLayerError(
        f"activation {fn.describe()} has no exact Keras equivalent (Keras offers it only with "
        "its default parameters); weightio does not approximate",
        layer=layer,
    )


@KERAS_WRITE.register("dense")
def _dense(layer: DenseLayer, ctx: WriteContext) -> list[Any]:
    """Dense in the weights' own dtype, then a standalone activation if no string is exact."""
    keras = ctx.keras
    weight = np.asarray(ctx.archive.tensors[layer.weight.key])
    if layer.weight.dtype not in _KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"dense weights are {layer.weight.dtype}; Keras Dense computes in a float dtype only",
            layer=layer.name,
        )
    dtype = _KERAS_FLOAT[layer.weight.dtype]
    as_string = keras_activation_name(layer.activation)
    follow = None
    if as_string is None:
        follow = standalone_activation(
            layer.activation,
            name=ctx.names.fresh(f"{ctx.names.by_spec[layer.name]}_{layer.activation.name}"),
            dtype=dtype,
            ctx=ctx,
            layer=layer.name,
        )
    dense = keras.layers.Dense(
        layer.units,
        activation=as_string or "linear",
        use_bias=layer.use_bias,
        dtype=dtype,
        name=ctx.names.by_spec[layer.name],
    )
    dense.build((None, layer.in_features))
    weights = [dense_weight_to_keras(weight)]
    if layer.bias is not None:
        weights.append(np.asarray(ctx.archive.tensors[layer.bias.key]))
    dense.set_weights(weights)
    ctx.dtype = dtype
    return [dense] if follow is None else [dense, follow]


@KERAS_WRITE.register("activation")
def _activation(layer: ActivationLayer, ctx: WriteContext) -> list[Any]:
    """``Activation("name")`` when defaults match, else the exact dedicated layer."""
    name = ctx.names.by_spec[layer.name]
    fn = layer.activation
    return [standalone_activation(fn, name=name, dtype=ctx.dtype, ctx=ctx, layer=layer.name)]


@KERAS_WRITE.register("dropout")
def _dropout(layer: DropoutLayer, ctx: WriteContext) -> list[Any]:
    """Dropout(rate): inert at inference, kept so the structure round-trips."""
    name = ctx.names.by_spec[layer.name]
    return [ctx.keras.layers.Dropout(layer.rate, name=name, dtype=ctx.dtype)]


@KERAS_WRITE.register("identity")
def _identity(layer: IdentityLayer, ctx: WriteContext) -> list[Any]:
    """Identity."""
    return [ctx.keras.layers.Identity(name=ctx.names.by_spec[layer.name], dtype=ctx.dtype)]


@KERAS_WRITE.register("affine")
def _affine(layer: Any, ctx: WriteContext) -> list[Any]:
    """``Rescaling(scale=[...], offset=[...])``: Keras computes ``x * scale + offset`` itself."""
    scale = np.array(ctx.archive.tensors[layer.scale.key])
    offset = np.array(ctx.archive.tensors[layer.offset.key])
    if layer.scale.dtype not in _KERAS_FLOAT:
        raise UnsupportedLayerError(
            f"affine parameters are {layer.scale.dtype}; Keras Rescaling computes in floats only",
            layer=layer.name,
        )
    if ctx.keras.backend.image_data_format() == "channels_first":
        raise UnsupportedLayerError(
            "Keras Rescaling reshapes per-feature scales for images when image_data_format is "
            "'channels_first'; set it to 'channels_last' to build this model",
            layer=layer.name,
        )
    dtype = _KERAS_FLOAT[layer.scale.dtype]
    ctx.dtype = dtype
    return [
        ctx.keras.layers.Rescaling(
            scale=scale, offset=offset, dtype=dtype, name=ctx.names.by_spec[layer.name]
        )
    ]


@KERAS_WRITE.register("binary_proba")
def _binary_proba(layer: Any, ctx: WriteContext) -> list[Any]:
    """``[1 - p, p]`` as a frozen ``Dense(2)``: kernel ``[[-1, 1]]``, bias ``[1, 0]``.

    With one input each output is one exact product (by +-1) plus the bias: exactly ``1 - p``
    and ``p``. Keras has no standard layer for it, and a ``Lambda`` would not load safely.
    """
    dense = ctx.keras.layers.Dense(
        2, use_bias=True, dtype=ctx.dtype, trainable=False, name=ctx.names.by_spec[layer.name]
    )
    dense.build((None, 1))
    # -1, 1 and 0 are exact in every float dtype; Keras casts them to the layer's.
    dense.set_weights([np.array([[-1.0, 1.0]], np.float32), np.array([1.0, 0.0], np.float32)])
    return [dense]


@KERAS_WRITE.register("opaque")
def _opaque(layer: OpaqueLayer, ctx: WriteContext) -> list[Any]:
    """Refuse, naming the layer, its source class and why it was kept opaque."""
    why = f" ({layer.reason})" if layer.reason else ""
    raise UnsupportedLayerError(
        f"{layer.source_class or 'this layer'} was kept as 'opaque'{why}; weightio cannot build "
        "it in Keras. Replace or remove that layer in the source model",
        layer=layer.name,
    )


def _input_dtype(dtype: str) -> str:
    return _KERAS_ANY.get(dtype, "float32")


def to_keras(archive: Archive) -> Any:
    """Build a ``keras.Model`` computing what ``archive`` describes, with its weights set.

    A chain becomes ``keras.Sequential``; any other graph a Functional model.

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture.
        UnsupportedLayerError: naming the first layer with no exact Keras equivalent.
    """
    spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (a bare state dict) and no architecture, so no Keras "
            "model can be built from it; build the model in Keras and use load_into instead",
            file=archive.path,
        )
    keras = require("keras", purpose="building a Keras model")
    from weightio.adapters import keras_write_conv as conv

    archive = conv.prepare(archive)
    spec = archive.spec
    names = NameAllocator()
    for inp in spec.inputs:
        names.reserve(inp.name)
    for layer in spec.layers:
        names.reserve(layer.name)
    model_name = NameAllocator.clean(spec.name)
    inputs = {
        inp.name: keras.Input(
            shape=conv.keras_input_shape(spec, inp),
            dtype=_input_dtype(inp.dtype),
            name=names.by_spec[inp.name],
        )
        for inp in spec.inputs
    }
    dtypes = {inp.name: _KERAS_FLOAT.get(inp.dtype, "float32") for inp in spec.inputs}
    if spec.is_chain and not _keras_write_seq.needs_functional(spec):
        ctx = WriteContext(keras, archive, dtypes[spec.inputs[0].name], names)
        built: list[Any] = [inputs[spec.inputs[0].name]]
        source = spec.inputs[0].name
        for layer in spec.layers:
            built.extend(conv.write_layer(layer, ctx, source))
            source = layer.name
        return keras.Sequential(built, name=model_name)
    return _functional(archive, keras, names, inputs, dtypes, model_name)


def _write_merge(layer: LayerBase, ctx: WriteContext, sources: list[str]) -> list[Any]:
    """A layer reading several tensors (merges, attention).

    Elementwise merges (add, subtract…) of feature maps only are written on the channels-last
    tensors as they are: elementwise, they compute the same numbers in either layout; a
    concatenate of feature maps has its canonical axis moved to Keras's (1 -> -1). Any other
    layer reading a feature map assumes features on the last axis, which Keras' channels-last
    maps do not hold in canonical (channels-first) terms: refuse it rather than merge or
    concatenate along the wrong axis.
    """
    from weightio.layout_flow import CHANNELS, MAP_MERGE_KINDS, PLAIN, tensor_layouts

    tags = tensor_layouts(ctx.archive.spec)
    maps = [s for s in sources if tags.get(s, PLAIN) != PLAIN]
    if maps and layer.kind in MAP_MERGE_KINDS and len(maps) == len(sources):
        ctx.layout = CHANNELS
    elif maps:
        raise UnsupportedLayerError(
            f"{layer.kind} reads feature maps ({', '.join(maps)}); weightio writes a merge of "
            "channels-first feature maps into a channels-last Keras model only for elementwise "
            "merges whose inputs are all feature maps. Flatten or pool before merging",
            layer=layer.name,
        )
    return KERAS_WRITE.lookup(layer.kind, layer=layer.name)(layer, ctx)


def _functional(
    archive: Archive,
    keras: Any,
    names: NameAllocator,
    inputs: dict[str, Any],
    dtypes: dict[str, str],
    model_name: str,
) -> Any:
    """Wire the layers in topological order; each reads the tensors its spec inputs name."""
    spec = archive.spec
    tensors: dict[str, Any] = dict(inputs)
    for index in spec.topological_order():
        layer = spec.layers[index]
        sources = spec.layer_inputs(index)
        if len(sources) != 1 and layer.kind not in MULTI_INPUT_KINDS:
            raise UnsupportedLayerError(
                f"a {layer.kind} layer takes one input, the spec gives it "
                f"{len(sources)}: {sources}",
                layer=layer.name,
            )
        ctx = WriteContext(keras, archive, dtypes[sources[0]], names)
        tensor = tensors[sources[0]] if len(sources) == 1 else [tensors[s] for s in sources]
        if len(sources) == 1:
            from weightio.adapters.keras_write_conv import write_layer

            built = write_layer(layer, ctx, sources[0])
        else:
            built = _write_merge(layer, ctx, sources)
        for keras_layer in built:
            tensor = keras_layer(tensor)
        tensors[layer.name] = tensor
        dtypes[layer.name] = ctx.dtype
    outs = [tensors[out.layer] for out in spec.outputs]
    ins = [inputs[inp.name] for inp in spec.inputs]
    return keras.Model(
        inputs=ins[0] if len(ins) == 1 else ins,
        outputs=outs[0] if len(outs) == 1 else outs,
        name=model_name,
    )


# Family modules register into KERAS_WRITE (kept last: they import this module's helpers).
from weightio.adapters import keras_write_seq as _keras_write_seq  # noqa: E402
