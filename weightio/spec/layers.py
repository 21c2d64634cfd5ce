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
        want = (self.units, self.in_features)
        if tuple(self.weight.shape) != want:
            raise ValueError(
                f"dense weight shape {list(self.weight.shape)} disagrees with "
                f"[units, in_features] = {list(want)}"
            )
        if self.use_bias != (self.bias is not None):
            raise ValueError(f"use_bias={self.use_bias} but bias is {'absent' if self.bias is None else 'present'}")
        if self.bias is not None:
            if tuple(self.bias.shape) != (self.units,):
                raise ValueError(
                    f"dense bias shape {list(self.bias.shape)} disagrees with [units] = [{self.units}]"
                )
            if self.bias.dtype != self.weight.dtype:
                raise ValueError(f"dense bias dtype {self.bias.dtype} differs from weight dtype {self.weight.dtype}")
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
from weightio.spec.conv import (  # noqa: E402
    CONV_LAYER_CLASSES,
    ConvLayer,
    ConvTransposeLayer,
    FlattenLayer,
    GlobalPoolLayer,
    PermuteLayer,
    PoolLayer,
    ReshapeLayer,
    SeparableConvLayer,
    UpSamplingLayer,
    ZeroPaddingLayer,
)

Layer = Annotated[
    Union[
        DenseLayer,
        ActivationLayer,
        DropoutLayer,
        IdentityLayer,
        OpaqueLayer,
        ConvLayer,
        SeparableConvLayer,
        ConvTransposeLayer,
        PoolLayer,
        GlobalPoolLayer,
        ZeroPaddingLayer,
        UpSamplingLayer,
        FlattenLayer,
        ReshapeLayer,
        PermuteLayer,
    ],
    Field(discriminator="kind"),
]

#: Every layer model by its ``kind`` tag.
LAYER_KINDS: dict[str, type[LayerBase]] = {
    cls.model_fields["kind"].default: cls
    for cls in (DenseLayer, ActivationLayer, DropoutLayer, IdentityLayer, OpaqueLayer)
    + CONV_LAYER_CLASSES
}
