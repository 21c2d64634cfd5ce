"""Multi-head self-attention (Keras ``MultiHeadAttention``, PyTorch ``nn.MultiheadAttention``).

Canonical form is PyTorch's packed projection: ``in_proj_weight [3E, E]`` (query, key, value rows,
each split into ``num_heads`` consecutive blocks of ``E / num_heads``), ``in_proj_bias [3E]``,
``out_proj_weight [E, E]``, ``out_proj_bias [E]``. The layer reads one ``(N, T, E)`` tensor used
as query, key and value (self-attention) and scales scores by ``1/sqrt(E/num_heads)``.

Sources that keep the three projections apart (HF BERT's ``query``/``key``/``value``) give
``q_proj_weight``/``k_proj_weight``/``v_proj_weight [E, E]`` (and ``*_proj_bias [E]``) instead
of the packed pair, so each stays at its own state-dict key. With ``key_padding_mask`` the layer
reads a second input, an ``(N, T)`` mask: key ``j`` of sample ``n`` is attended iff
``mask[n, j] != 0`` (HF's ``attention_mask``, Keras's ``value_mask``; the opposite polarity of
``nn.MultiheadAttention``'s ``key_padding_mask``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from weightio.spec.base import LayerBase, Shape
from weightio.spec.tensors import TensorRef

#: The fields of separately kept projections (weights first, as ``tensor_fields`` lists them).
SEPARATE_FIELDS = ("q_proj_weight", "k_proj_weight", "v_proj_weight",
                   "q_proj_bias", "k_proj_bias", "v_proj_bias")


class MultiHeadAttentionLayer(LayerBase):
    """Self-attention over the time axis of a batch-first ``(N, T, E)`` input."""

    kind: Literal["multi_head_attention"] = "multi_head_attention"
    embed_dim: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    use_bias: bool = True
    in_proj_weight: TensorRef | None = None
    in_proj_bias: TensorRef | None = None
    out_proj_weight: TensorRef
    out_proj_bias: TensorRef | None = None
    q_proj_weight: TensorRef | None = None
    k_proj_weight: TensorRef | None = None
    v_proj_weight: TensorRef | None = None
    q_proj_bias: TensorRef | None = None
    k_proj_bias: TensorRef | None = None
    v_proj_bias: TensorRef | None = None
    key_padding_mask: bool = Field(
        default=False,
        description="Reads a second input, an (N, T) mask: key j of sample n is attended iff "
        "mask[n, j] != 0 (HF attention_mask, Keras value_mask).",
    )

    tensor_fields: ClassVar[tuple[str, ...]] = (
        "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias",
        *SEPARATE_FIELDS,
    )

    @property
    def separate(self) -> bool:
        """Whether the projections are kept apart (``q/k/v_proj_*``) rather than packed."""
        return self.in_proj_weight is None

    @model_validator(mode="after")
    def _shapes_agree(self) -> MultiHeadAttentionLayer:
        e = self.embed_dim
        problems = []
        if e % self.num_heads:
            problems.append(f"embed_dim {e} does not split into {self.num_heads} heads")
        separate = [getattr(self, f) is not None for f in SEPARATE_FIELDS]
        if self.in_proj_weight is not None and any(separate):
            problems.append("packed in_proj_weight and separate q/k/v projections are both given")
        if self.separate:
            want = {f: (e,) if f.endswith("bias") else (e, e) for f in SEPARATE_FIELDS}
            if self.in_proj_bias is not None:
                problems.append("in_proj_bias is given with separate q/k/v projections")
            for field in SEPARATE_FIELDS[:3]:
                if getattr(self, field) is None:
                    problems.append(f"{field} is missing (no packed in_proj_weight either)")
        else:
            want = {"in_proj_weight": (3 * e, e), "in_proj_bias": (3 * e,)}
        want.update({"out_proj_weight": (e, e), "out_proj_bias": (e,)})
        for field, shape in want.items():
            ref = getattr(self, field)
            if field.endswith("bias") and (ref is not None) != self.use_bias:
                problems.append(f"use_bias={self.use_bias} but {field} is {'present' if ref else 'absent'}")
            if ref is not None and tuple(ref.shape) != shape:
                problems.append(f"{field} shape {list(ref.shape)} disagrees with {list(shape)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def input_count(self) -> int:
        """The tensors it reads: x, and the key padding mask when it has one."""
        return 2 if self.key_padding_mask else 1

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The input's rank: a sequence in, a sequence out."""
        return input_ranks[0] if input_ranks else None

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The query's shape."""
        return input_shapes[0] if input_shapes else None

    def formula(self) -> str:
        """Scaled dot-product attention over the heads."""
        masked = ", keys where mask = 0 ignored" if self.key_padding_mask else ""
        return f"softmax(Q·Kᵀ / √d)·V with {self.num_heads} heads, Q = K = V from x{masked}"

    def detail(self) -> str:
        """Width and heads."""
        mask = ", key padding mask" if self.key_padding_mask else ""
        return f"embed={self.embed_dim}, heads={self.num_heads}{mask}"


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (MultiHeadAttentionLayer,)
