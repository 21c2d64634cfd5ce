"""Normalisation layer kinds: batch norm (inference statistics), layer norm, group norm, and
Keras ``Normalization`` (a fixed mean/variance standardisation).

Axes are counted with the batch axis (as Keras and the ``softmax`` activation do): ``axis=1`` is
the channel axis of a channels-first tensor (PyTorch's convention, and the canonical one),
``axis=-1`` the last axis. For a ``(N, F)`` input the two coincide. Epsilons are the source's
own, never a framework default: Keras defaults to 1e-3, PyTorch to 1e-5.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from weightio.spec.base import LayerBase, LayoutTrait, Shape
from weightio.spec.tensors import TensorRef


def _check_vector(name: str, ref: TensorRef | None, size: int, problems: list[str]) -> None:
    if ref is not None and tuple(ref.shape) != (size,):
        problems.append(f"{name} shape {list(ref.shape)} disagrees with [{size}]")


class BatchNormLayer(LayerBase):
    """``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` along ``axis``.

    ``weight`` is absent when the source had no scale (Keras ``scale=False``), ``bias`` when it
    had no offset (``center=False``); torch ``affine=False`` has neither. ``input_rank`` (batch
    included) is known when the reader saw the input's shape; writers use it to pick
    ``BatchNorm1d/2d/3d``. ``momentum`` is training metadata only, in PyTorch's convention (the
    weight of the new batch statistic; Keras's momentum is ``1 - momentum``).
    """

    kind: Literal["batch_norm"] = "batch_norm"
    num_features: int = Field(gt=0)
    axis: int = 1
    input_rank: int | None = Field(default=None, ge=2)
    eps: float = Field(ge=0.0)  # torch allows 0; a Keras Normalization is written as one
    momentum: float | None = Field(default=None, description="PyTorch convention; metadata only.")
    weight: TensorRef | None = None
    bias: TensorRef | None = None
    running_mean: TensorRef
    running_var: TensorRef

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight", "bias", "running_mean", "running_var")

    @model_validator(mode="after")
    def _shapes_agree(self) -> BatchNormLayer:
        problems: list[str] = []
        for field in self.tensor_fields:
            _check_vector(f"batch_norm {field}", getattr(self, field), self.num_features, problems)
        if self.axis == 0 or (self.input_rank is not None and not -self.input_rank < self.axis < self.input_rank):
            problems.append(f"batch_norm axis {self.axis} is the batch axis or out of range")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def channel_axis(self) -> int | None:
        """The axis as a positive index, when the rank is known (or trivially for axis >= 1)."""
        if self.axis > 0:
            return self.axis
        return None if self.input_rank is None else self.axis + self.input_rank

    buffers: ClassVar[frozenset[str]] = frozenset({"running_mean", "running_var"})
    layout: ClassVar[LayoutTrait] = "per_channel"

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Inference statistics along the axis, then the affine part when there is one."""
        scale = " · weight" if self.weight is not None else ""
        shift = " + bias" if self.bias is not None else ""
        return (
            f"(x - running_mean) / sqrt(running_var + {self.eps:g}){scale}{shift}"
            f"   (one statistic per index on axis {self.axis})"
        )

    def detail(self) -> str:
        """Features, axis, eps."""
        return f"features={self.num_features}, axis={self.axis}, eps={self.eps:g}"


class LayerNormLayer(LayerBase):
    """Normalise over the last ``len(normalized_shape)`` axes, then ``* weight + bias``.

    ``weight``/``bias`` have the shape ``normalized_shape`` when present (torch
    ``elementwise_affine=False`` or Keras ``scale=False``/``center=False`` drop them).
    """

    kind: Literal["layer_norm"] = "layer_norm"
    normalized_shape: tuple[int, ...] = Field(min_length=1)
    eps: float = Field(gt=0.0)
    weight: TensorRef | None = None
    bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")

    @model_validator(mode="after")
    def _shapes_agree(self) -> LayerNormLayer:
        for field in self.tensor_fields:
            ref = getattr(self, field)
            if ref is not None and tuple(ref.shape) != tuple(self.normalized_shape):
                raise ValueError(
                    f"layer_norm {field} shape {list(ref.shape)} disagrees with "
                    f"normalized_shape {list(self.normalized_shape)}"
                )
        return self

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The input's rank."""
        return input_ranks[0] if input_ranks else None

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Statistics over the last axes."""
        return (
            f"(x - mean) / sqrt(var + {self.eps:g}) over the last {len(self.normalized_shape)} "
            f"axis(es){' · weight' if self.weight is not None else ''}"
            f"{' + bias' if self.bias is not None else ''}"
        )

    def detail(self) -> str:
        """Normalised shape and eps."""
        return f"shape={tuple(self.normalized_shape)}, eps={self.eps:g}"


class GroupNormLayer(LayerBase):
    """Split the channels on ``axis`` into ``num_groups`` groups; normalise each group over its
    channels and every non-batch position; then per-channel ``* weight + bias``.
    """

    kind: Literal["group_norm"] = "group_norm"
    num_groups: int = Field(gt=0)
    num_channels: int = Field(gt=0)
    axis: int = 1
    input_rank: int | None = Field(default=None, ge=2)
    eps: float = Field(gt=0.0)
    weight: TensorRef | None = None
    bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")

    @model_validator(mode="after")
    def _shapes_agree(self) -> GroupNormLayer:
        problems: list[str] = []
        if self.num_channels % self.num_groups:
            problems.append(f"{self.num_channels} channels do not split into {self.num_groups} groups")
        for field in self.tensor_fields:
            _check_vector(f"group_norm {field}", getattr(self, field), self.num_channels, problems)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    layout: ClassVar[LayoutTrait] = "per_channel"

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Statistics within each channel group."""
        return (
            f"(x - mean) / sqrt(var + {self.eps:g}) within each of {self.num_groups} channel "
            f"groups{' · weight' if self.weight is not None else ''}"
            f"{' + bias' if self.bias is not None else ''}"
        )

    def detail(self) -> str:
        """Groups, channels, eps."""
        return f"groups={self.num_groups}, channels={self.num_channels}, eps={self.eps:g}"


class NormalizationLayer(LayerBase):
    """Keras ``Normalization``: ``y = (x - mean) / max(sqrt(variance), eps)`` along ``axis``.

    ``eps`` is Keras's ``backend.epsilon()`` at read time (1e-7 by default). The statistics are
    stored as vectors over the one normalised axis.
    """

    kind: Literal["normalization"] = "normalization"
    num_features: int = Field(gt=0)
    axis: int = -1
    input_rank: int | None = Field(default=None, ge=2)
    eps: float = Field(gt=0.0)
    mean: TensorRef
    variance: TensorRef

    tensor_fields: ClassVar[tuple[str, ...]] = ("mean", "variance")

    @model_validator(mode="after")
    def _shapes_agree(self) -> NormalizationLayer:
        problems: list[str] = []
        for field in self.tensor_fields:
            _check_vector(f"normalization {field}", getattr(self, field), self.num_features, problems)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    buffers: ClassVar[frozenset[str]] = frozenset({"mean", "variance"})
    #: Per index of the canonical ``axis`` (1 = channels of a feature map), like batch norm.
    layout: ClassVar[LayoutTrait] = "per_channel"

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The input's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Keras's own floor on the standard deviation."""
        return f"(x - mean) / max(sqrt(variance), {self.eps:g}) on axis {self.axis}"

    def detail(self) -> str:
        """Features, axis, eps."""
        return f"features={self.num_features}, axis={self.axis}, eps={self.eps:g}"


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (BatchNormLayer, LayerNormLayer, GroupNormLayer, NormalizationLayer)
