"""Graph operation kinds: merges of several tensors, and taking a sequence's last step.

These give Functional Keras models and traced PyTorch modules their non-chain shapes (residual
blocks, skip connections, concatenated branches). A merge reads two or more inputs of the same
shape (Concatenate: the same shape but on ``axis``); ``subtract`` reads exactly two.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from weightio.spec.layers import LayerBase

#: Kinds that read more than one input.
MULTI_INPUT_KINDS = frozenset(
    {"add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate"}
)


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


class ConcatenateLayer(LayerBase):
    """Join the inputs along ``axis`` (counted with the batch axis; negative from the end)."""

    kind: Literal["concatenate"] = "concatenate"
    axis: int = -1


class LastStepLayer(LayerBase):
    """``x[:, -1]``: the last step of a batch-first sequence ``(N, T, ...)`` -> ``(N, ...)``."""

    kind: Literal["last_step"] = "last_step"


MERGE_LAYERS = (MergeLayer, ConcatenateLayer, LastStepLayer)
