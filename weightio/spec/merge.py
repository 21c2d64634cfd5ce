"""Graph operation kinds: merges of several tensors, and taking a sequence's last step.

These give Functional Keras models and traced PyTorch modules their non-chain shapes (residual
blocks, skip connections, concatenated branches). A merge reads two or more inputs of the same
shape (Concatenate: the same shape but on ``axis``); ``subtract`` reads exactly two.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from weightio.spec.base import LayerBase, LayoutTrait, Shape

#: What each elementwise merge computes, for ``formula``.
MERGE_TEXT = {
    "add": "x₀ + x₁ + …", "subtract": "x₀ - x₁", "multiply": "x₀ · x₁ · …",
    "average": "(x₀ + x₁ + …) / n", "maximum": "max(x₀, x₁, …)", "minimum": "min(x₀, x₁, …)",
}


class MergeLayer(LayerBase):
    """Elementwise merge of its inputs, in ``inputs`` order.

    ``add`` sums, ``subtract`` is ``inputs[0] - inputs[1]``, ``multiply`` the product,
    ``average`` the sum divided by the count, ``maximum``/``minimum`` elementwise.
    """

    kind: Literal["add", "subtract", "multiply", "average", "maximum", "minimum"]

    @model_validator(mode="after")
    def _arity(self) -> MergeLayer:
        count = len(self.inputs or [])
        if self.inputs is not None and (count < 2 or (self.kind == "subtract" and count != 2)):
            raise ValueError(
                f"a {self.kind} layer needs {'two' if self.kind == 'subtract' else 'two or more'} inputs, got {count}"
            )
        return self

    layout: ClassVar[LayoutTrait] = "merge"
    multi_input: ClassVar[bool] = True

    def formula(self) -> str:
        """The merge, written out."""
        return MERGE_TEXT[self.kind]


class ConcatenateLayer(LayerBase):
    """Join the inputs along ``axis`` (counted with the batch axis; negative from the end)."""

    kind: Literal["concatenate"] = "concatenate"
    axis: int = -1

    layout: ClassVar[LayoutTrait] = "join"
    multi_input: ClassVar[bool] = True

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The inputs' shape, their sizes summed along ``axis``."""
        if not input_shapes or any(len(x) != len(input_shapes[0]) for x in input_shapes):
            return None
        rank = len(input_shapes[0])
        axis = self.axis - 1 if self.axis > 0 else rank + self.axis
        if not 0 <= axis < rank:
            return None
        sizes = [x[axis] for x in input_shapes]
        total = None if any(n is None for n in sizes) else sum(sizes)  # type: ignore[arg-type]
        return (*input_shapes[0][:axis], total, *input_shapes[0][axis + 1:])

    def formula(self) -> str:
        """The inputs joined on the axis."""
        return f"[x₀, x₁, …] joined on axis {self.axis}"

    def detail(self) -> str:
        """The axis."""
        return f"axis={self.axis}"


class LastStepLayer(LayerBase):
    """``x[:, -1]``: the last step of a batch-first sequence ``(N, T, ...)`` -> ``(N, ...)``."""

    kind: Literal["last_step"] = "last_step"

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The steps axis dropped."""
        rank = input_ranks[0] if input_ranks else None
        return None if rank is None else rank - 1

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The time axis dropped."""
        if not input_shapes or not input_shapes[0]:
            return None
        return tuple(input_shapes[0][1:])

    def formula(self) -> str:
        """The last step."""
        return "x[:, -1]   (the sequence's last step)"


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (MergeLayer, ConcatenateLayer, LastStepLayer)
