"""Multi-head self-attention (Keras ``MultiHeadAttention``, PyTorch ``nn.MultiheadAttention``).

Canonical form is PyTorch's packed projection: ``in_proj_weight [3E, E]`` (query, key, value rows,
each split into ``num_heads`` consecutive blocks of ``E / num_heads``), ``in_proj_bias [3E]``,
``out_proj_weight [E, E]``, ``out_proj_bias [E]``. The layer reads one ``(N, T, E)`` tensor used
as query, key and value (self-attention, no mask) and scales scores by ``1/sqrt(E/num_heads)``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from weightio.spec.base import LayerBase, Shape
from weightio.spec.tensors import TensorRef


class MultiHeadAttentionLayer(LayerBase):
    """Self-attention over the time axis of a batch-first ``(N, T, E)`` input."""

    kind: Literal["multi_head_attention"] = "multi_head_attention"
    embed_dim: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    use_bias: bool = True
    in_proj_weight: TensorRef
    in_proj_bias: TensorRef | None = None
    out_proj_weight: TensorRef
    out_proj_bias: TensorRef | None = None

    tensor_fields: ClassVar[tuple[str, ...]] = (
        "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"
    )

    @model_validator(mode="after")
    def _shapes_agree(self) -> MultiHeadAttentionLayer:
        e = self.embed_dim
        problems = []
        if e % self.num_heads:
            problems.append(f"embed_dim {e} does not split into {self.num_heads} heads")
        want = {"in_proj_weight": (3 * e, e), "in_proj_bias": (3 * e,),
                "out_proj_weight": (e, e), "out_proj_bias": (e,)}
        for field, shape in want.items():
            ref = getattr(self, field)
            if field.endswith("bias") and (ref is not None) != self.use_bias:
                problems.append(f"use_bias={self.use_bias} but {field} is {'present' if ref else 'absent'}")
            if ref is not None and tuple(ref.shape) != shape:
                problems.append(f"{field} shape {list(ref.shape)} disagrees with {list(shape)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The input's rank: a sequence in, a sequence out."""
        return input_ranks[0] if input_ranks else None

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The query's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Scaled dot-product attention over the heads."""
        return f"softmax(Q·Kᵀ / √d)·V with {self.num_heads} heads, Q = K = V from x"

    def detail(self) -> str:
        """Width and heads."""
        return f"embed={self.embed_dim}, heads={self.num_heads}"


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (MultiHeadAttentionLayer,)
