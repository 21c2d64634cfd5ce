"""Small ``torch.nn`` modules for spec kinds ``torch.nn`` has no exact standard module for.

Imported only by the PyTorch adapter (it imports torch at the top). The PyTorch reader treats
these classes as leaf modules, so a model built by ``to_torch`` reads back to the same kinds.
"""

from __future__ import annotations

import torch
from torch import nn


class Affine(nn.Module):
    """Elementwise ``y = x * scale + offset`` over the last axis (spec kind ``affine``).

    ``scale`` and ``offset`` are trainable parameters of shape ``[features]``. Unlike a
    ``BatchNorm1d`` in disguise it computes the same thing in ``train()`` and ``eval()`` mode.
    """

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.features = int(scale.shape[0])
        requires_grad = scale.is_floating_point()
        self.scale = nn.Parameter(scale, requires_grad=requires_grad)
        self.offset = nn.Parameter(offset, requires_grad=requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * scale + offset``, per feature on the last axis."""
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"features={self.features}"


#: Classes the reader keeps as leaves (never traced into), by their qualified names.
LEAF_MODULES = (Affine,)
