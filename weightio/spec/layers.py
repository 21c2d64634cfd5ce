"""Layer kinds: one pydantic model per kind, joined in a union discriminated on ``kind``.

A layer carries its hyper-parameters as typed fields and its parameters as ``TensorRef`` fields
in the canonical layout. Validators check each layer against itself (a dense weight must be
``[units, in_features]``) so an inconsistent spec fails before any framework is touched.

Adding a kind: a model here (or in a family module), an entry in ``Layer``, one mapping per
framework in the adapters' registries, a runtime function, and a round-trip test row.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, model_validator

from weightio.spec.activations import LINEAR, ActivationFn
from weightio.spec.tensors import SpecModel, TensorRef

_NAME_PATTERN = r"^[^\s/\\][^/\\]*$"


class LayerBase(SpecModel):
    """Fields every layer has.

    ``inputs`` names the layers or model inputs this layer reads. ``None`` means "the previous
    layer's output" (or the first model input, for the first layer): a chain needs no wiring.
    """

    kind: str
    name: str = Field(min_length=1, max_length=512, pattern=_NAME_PATTERN)
    inputs: list[str] | None = Field(
        default=None, description="Names of the layers or model inputs feeding this layer."
    )
    source_class: str | None = Field(
        default=None, description="The source framework's class or op, e.g. 'keras.layers.Dense'."
    )

    #: Names of the fields holding parameters, in canonical order.
    tensor_fields: ClassVar[tuple[str, ...]] = ()

    def tensor_refs(self) -> dict[str, TensorRef]:
        """Return this layer's parameters by canonical name, in canonical order."""
        refs = {}
        for field in self.tensor_fields:
            ref = getattr(self, field)
            if ref is not None:
                refs[field] = ref
        return refs


def check_param_shape(ref: TensorRef, want: tuple[int, ...], *, what: str, layout: str = "") -> None:
    """The one shape check of a parameter against what its layer's hyper-parameters imply.

    ``layout`` names the axes (``"[units, in_features]"``) so the message says which one is off.
    """
    if tuple(ref.shape) != want:
        expected = f"{layout} = {list(want)}" if layout else f"{list(want)}"
        raise ValueError(f"{what} shape {list(ref.shape)} disagrees with {expected}")


def check_bias(
    bias: TensorRef | None, use_bias: bool, size: int, *, weight: TensorRef, what: str
) -> None:
    """The one bias check of every layer kind: present iff ``use_bias``, ``[size]``, weight dtype."""
    if use_bias != (bias is not None):
        raise ValueError(f"use_bias={use_bias} but bias is {'absent' if bias is None else 'present'}")
    if bias is None:
        return
    check_param_shape(bias, (size,), what=f"{what} bias")
    if bias.dtype != weight.dtype:
        raise ValueError(f"{what} bias dtype {bias.dtype} differs from weight dtype {weight.dtype}")


class DenseLayer(LayerBase):
    """``y = activation(x @ weight.T + bias)`` over the last axis (Keras Dense, torch Linear)."""

    kind: Literal["dense"] = "dense"
    units: int = Field(gt=0)
    in_features: int = Field(gt=0)
    use_bias: bool = True
    activation: ActivationFn = LINEAR
    weight: TensorRef
    bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")

    @model_validator(mode="after")
    def _shapes_agree(self) -> DenseLayer:
        check_param_shape(self.weight, (self.units, self.in_features), what="dense weight",
                          layout="[units, in_features]")
        check_bias(self.bias, self.use_bias, self.units, weight=self.weight, what="dense")
        return self


class ActivationLayer(LayerBase):
    """A standalone activation (Keras Activation/ReLU/Softmax…, torch nn.ReLU or F.relu…)."""

    kind: Literal["activation"] = "activation"
    activation: ActivationFn


class DropoutLayer(LayerBase):
    """Dropout: kept so the structure round-trips; it is the identity at inference."""

    kind: Literal["dropout"] = "dropout"
    rate: float = Field(ge=0.0, le=1.0)


class IdentityLayer(LayerBase):
    """Passes its input through unchanged (torch nn.Identity, Keras Identity)."""

    kind: Literal["identity"] = "identity"


class AffineLayer(LayerBase):
    """Elementwise ``y = x * scale + offset`` over the last axis (feature scaling).

    The neutral form of scikit-learn's StandardScaler, MinMaxScaler and MaxAbsScaler and of a
    Keras ``Rescaling`` with per-feature arrays. ``scale`` and ``offset`` are ``[features]``.
    """

    kind: Literal["affine"] = "affine"
    features: int = Field(gt=0)
    scale: TensorRef
    offset: TensorRef

    tensor_fields: ClassVar[tuple[str, ...]] = ("scale", "offset")

    @model_validator(mode="after")
    def _shapes_agree(self) -> AffineLayer:
        for param in ("scale", "offset"):
            check_param_shape(getattr(self, param), (self.features,), what=f"affine {param}",
                              layout="[features]")
        if self.scale.dtype != self.offset.dtype:
            raise ValueError(
                f"affine offset dtype {self.offset.dtype} differs from scale dtype {self.scale.dtype}"
            )
        return self


class BinaryProbaLayer(LayerBase):
    """``[batch, 1]`` probability ``p`` -> ``[batch, 2]`` columns ``[1 - p, p]``.

    How a binary classifier's single probability becomes the two columns scikit-learn's
    ``predict_proba`` returns, exactly (``1 - p`` is one rounding, as in scikit-learn).
    """

    kind: Literal["binary_proba"] = "binary_proba"


class OpaqueLayer(LayerBase):
    """A layer weightio does not know: its raw tensors and the source's description.

    Archiving, inspecting and diffing work on it; converting or running it fails, naming the
    layer. ``config`` holds the source's configuration as plain JSON data, never code.
    Weights-only archives (a bare state dict) are made of these.
    """

    kind: Literal["opaque"] = "opaque"
    reason: str | None = Field(
        default=None, description="Why the reader kept this layer opaque, for error messages."
    )
    config: dict[str, Any] = Field(default_factory=dict)
    tensors: dict[str, TensorRef] = Field(default_factory=dict)

    def tensor_refs(self) -> dict[str, TensorRef]:
        """Return the raw tensors under their source parameter names."""
        return dict(self.tensors)


# Family modules subclass LayerBase, so they are imported once it exists.
from weightio.spec.attention import ATTENTION_LAYERS  # noqa: E402
from weightio.spec.conv import CONV_LAYER_CLASSES  # noqa: E402
from weightio.spec.merge import MERGE_LAYERS  # noqa: E402
from weightio.spec.norm import NORM_LAYERS  # noqa: E402
from weightio.spec.recurrent import SEQUENCE_LAYERS  # noqa: E402

_ALL_LAYERS: tuple[type[LayerBase], ...] = (
    DenseLayer, ActivationLayer, DropoutLayer, IdentityLayer, AffineLayer, BinaryProbaLayer,
    OpaqueLayer,
    *CONV_LAYER_CLASSES, *NORM_LAYERS, *SEQUENCE_LAYERS, *MERGE_LAYERS, *ATTENTION_LAYERS,
)

Layer = Annotated[Union[_ALL_LAYERS], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007 - Union of a runtime tuple


def _kinds_of(cls: type[LayerBase]) -> tuple[str, ...]:
    """The ``kind`` tags a model accepts (a merge model takes several)."""
    annotation = cls.model_fields["kind"].annotation
    return tuple(getattr(annotation, "__args__", ())) or (cls.model_fields["kind"].default,)


#: Every layer model by its ``kind`` tag.
LAYER_KINDS: dict[str, type[LayerBase]] = {
    kind: cls for cls in _ALL_LAYERS for kind in _kinds_of(cls)
}
