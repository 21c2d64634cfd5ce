"""The core layer kinds: dense, activation, dropout, identity, affine, rescaling, binary_proba, opaque."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from weightio.spec.activations import LINEAR, ActivationFn
from weightio.spec.base import LayerBase, LayoutTrait, Shape, check_bias, check_param_shape
from weightio.spec.tensors import TensorRef


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

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """Applied to the last axis: the input's rank."""
        return input_ranks[0] if input_ranks else None

    @model_validator(mode="after")
    def _shapes_agree(self) -> DenseLayer:
        check_param_shape(self.weight, (self.units, self.in_features), what="dense weight",
                          layout="[units, in_features]")
        check_bias(self.bias, self.use_bias, self.units, weight=self.weight, what="dense")
        return self

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The last axis becomes ``units``."""
        if not input_shapes or not input_shapes[0]:
            return None
        return (*input_shapes[0][:-1], self.units)

    def formula(self) -> str:
        """``relu(x · Wᵀ + b)``, with the activation's parameters when it has any."""
        affine = "x · Wᵀ + b" if self.bias is not None else "x · Wᵀ"
        return self.activation.around(affine)

    def detail(self) -> str:
        """Units, inputs and the activation."""
        return f"units={self.units}, in={self.in_features}, activation={self.activation.describe()}"


class ActivationLayer(LayerBase):
    """A standalone activation (Keras Activation/ReLU/Softmax…, torch nn.ReLU or F.relu…)."""

    kind: Literal["activation"] = "activation"
    activation: ActivationFn

    layout: ClassVar[LayoutTrait] = "elementwise"

    def formula(self) -> str:
        """``relu(x)``."""
        return self.activation.around("x")

    def detail(self) -> str:
        """The activation with its parameters."""
        return self.activation.describe()


class DropoutLayer(LayerBase):
    """Dropout: kept so the structure round-trips; it is the identity at inference."""

    kind: Literal["dropout"] = "dropout"
    rate: float = Field(ge=0.0, le=1.0)

    layout: ClassVar[LayoutTrait] = "elementwise"

    def formula(self) -> str:
        """The identity, said so."""
        return f"x   (dropout, rate {self.rate}: the identity at inference)"

    def detail(self) -> str:
        """The rate."""
        return f"rate={self.rate}"


class IdentityLayer(LayerBase):
    """Passes its input through unchanged (torch nn.Identity, Keras Identity)."""

    kind: Literal["identity"] = "identity"

    layout: ClassVar[LayoutTrait] = "elementwise"

    def formula(self) -> str:
        """``x``."""
        return "x"


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

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Per feature of the last axis."""
        return "x · scale + offset   (one scale and offset per feature, last axis)"

    def detail(self) -> str:
        """The feature count."""
        return f"features={self.features}"


class RescalingLayer(LayerBase):
    """``y = x * scale + offset`` with one value, or one per index of ``axis`` (Keras ``Rescaling``).

    ``scale`` and ``offset`` hold one number (the same for every element) or one per index of
    the canonical ``axis`` (1: the channels of a feature map; -1: the features of plain data).
    They are hyper-parameters, as in Keras, not weights: each is cast to the compute ``dtype``
    before use, exactly as Keras casts them, so every framework multiplies by the same number.
    """

    kind: Literal["rescaling"] = "rescaling"
    scale: tuple[float, ...] = Field(min_length=1)
    offset: tuple[float, ...] = Field(min_length=1)
    axis: int = -1
    dtype: Literal["F16", "BF16", "F32", "F64"] = "F32"

    layout: ClassVar[LayoutTrait] = "per_channel"

    @model_validator(mode="after")
    def _sizes_agree(self) -> RescalingLayer:
        sizes = {len(self.scale), len(self.offset)} - {1}
        if len(sizes) > 1:
            raise ValueError(
                f"rescaling scale has {len(self.scale)} values and offset {len(self.offset)}; "
                "each holds one value or one per channel"
            )
        if self.axis == 0:
            raise ValueError("rescaling axis 0 is the batch axis")
        return self

    @property
    def size(self) -> int:
        """How many channels the vectors run over (1 for a scalar rescaling)."""
        return max(len(self.scale), len(self.offset))

    def formula(self) -> str:
        """One product and one sum per element."""
        where = "" if self.size == 1 else f"   (one scale and offset per index on axis {self.axis})"
        return f"x · scale + offset{where}"

    def detail(self) -> str:
        """The values (abbreviated), axis and compute dtype."""

        def show(values: tuple[float, ...]) -> str:
            head = ", ".join(f"{v:g}" for v in values[:4])
            return head if len(values) == 1 else f"[{head}{', …' if len(values) > 4 else ''}]"

        axis = f", axis={self.axis}" if self.size > 1 else ""
        return f"scale={show(self.scale)}, offset={show(self.offset)}{axis}, dtype={self.dtype}"


class BinaryProbaLayer(LayerBase):
    """``[batch, 1]`` probability ``p`` -> ``[batch, 2]`` columns ``[1 - p, p]``.

    How a binary classifier's single probability becomes the two columns scikit-learn's
    ``predict_proba`` returns, exactly (``1 - p`` is one rounding, as in scikit-learn).
    """

    kind: Literal["binary_proba"] = "binary_proba"

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """Two columns where there was one."""
        if not input_shapes or not input_shapes[0]:
            return None
        return (*input_shapes[0][:-1], 2)

    def formula(self) -> str:
        """The two columns scikit-learn's ``predict_proba`` returns."""
        return "[1 - x, x]   (one probability -> two columns)"


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

    def formula(self) -> str:
        """Unknown: the source's class, not a formula."""
        return f"{self.source_class or 'an unknown layer'} (kept as opaque: not computed)"

    def detail(self) -> str:
        """Why it was kept opaque."""
        return self.reason or ""


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (
    DenseLayer, ActivationLayer, DropoutLayer, IdentityLayer, AffineLayer, RescalingLayer,
    BinaryProbaLayer, OpaqueLayer,
)
