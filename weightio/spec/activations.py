"""Activation functions with their parameters made explicit.

Frameworks disagree on defaults (Keras ``leaky_relu`` slope 0.2, its ``LeakyReLU`` layer 0.3,
PyTorch 0.01; Keras ``gelu`` layer approximates, PyTorch's does not), so the spec never relies on
a default: every parameter an activation has is written out, filled in by the reader from what
the source really computes. A writer then sets it explicitly on the target.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from weightio.spec.tensors import SpecModel

ActivationName = Literal[
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "celu",
    "selu",
    "gelu",
    "sigmoid",
    "log_sigmoid",
    "hard_sigmoid",
    "tanh",
    "hard_tanh",
    "softmax",
    "log_softmax",
    "softplus",
    "softsign",
    "silu",
    "hard_silu",
    "mish",
    "tanh_shrink",
    "soft_shrink",
    "hard_shrink",
]

#: Which parameters each activation takes; every one of them must be given.
ACTIVATION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "leaky_relu": ("negative_slope",),
    "elu": ("alpha",),
    "celu": ("alpha",),
    "gelu": ("approximate",),
    "softmax": ("axis",),
    "log_softmax": ("axis",),
    "soft_shrink": ("threshold",),
    "hard_shrink": ("threshold",),
}

_ALL_PARAMETERS = ("negative_slope", "alpha", "approximate", "axis", "threshold")


class ActivationFn(SpecModel):
    """An elementwise (or softmax-like) function and every parameter it takes.

    ``axis`` counts the batch dimension, as both frameworks do; -1 is the feature axis.
    ``approximate`` is ``True`` for the tanh approximation of GELU.
    """

    name: ActivationName = "linear"
    negative_slope: float | None = Field(default=None, description="leaky_relu slope for x < 0.")
    alpha: float | None = Field(default=None, description="elu/celu scale for x < 0.")
    approximate: bool | None = Field(default=None, description="gelu: tanh approximation.")
    axis: int | None = Field(default=None, description="softmax/log_softmax axis (batch is 0).")
    threshold: float | None = Field(default=None, description="soft/hard shrink threshold.")

    @model_validator(mode="after")
    def _parameters_match_name(self) -> ActivationFn:
        wanted = ACTIVATION_PARAMETERS.get(self.name, ())
        missing = [p for p in wanted if getattr(self, p) is None]
        extra = [p for p in _ALL_PARAMETERS if p not in wanted and getattr(self, p) is not None]
        if missing:
            raise ValueError(f"activation {self.name!r} needs {', '.join(missing)} set explicitly")
        if extra:
            raise ValueError(f"activation {self.name!r} takes no {', '.join(extra)}")
        return self

    def describe(self) -> str:
        """Return e.g. ``leaky_relu(negative_slope=0.2)``."""
        params = [f"{p}={getattr(self, p)}" for p in ACTIVATION_PARAMETERS.get(self.name, ())]
        return f"{self.name}({', '.join(params)})" if params else self.name

    def around(self, inner: str) -> str:
        """The activation applied to the expression ``inner``: ``relu(x · Wᵀ + b)``.

        The identity gives ``inner`` unchanged; parameters follow, ``… with alpha=1.0``.
        """
        if self.name == "linear":
            return inner
        params = [f"{p}={getattr(self, p)}" for p in ACTIVATION_PARAMETERS.get(self.name, ())]
        return f"{self.name}({inner})" + (f"  with {', '.join(params)}" if params else "")


LINEAR = ActivationFn(name="linear")
