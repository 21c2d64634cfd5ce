"""PyTorch core modules and functions -> spec layers: Linear, dropout, Identity, activations,
weightio's Affine and Rescaling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weightio.frameworks.torch.common import torch_dtype_name
from weightio.frameworks.torch.read.base import (
    FUNCTION_PARAMETERS,
    IGNORED_PARAMETERS,
    PARAMETRIZED,
    REQUIRED,
    TORCH_READ,
    ReadContext,
    ReadFn,
    int8_weight,
    module_weight,
)
from weightio.spec.activations import ActivationFn
from weightio.spec.base import LayerBase
from weightio.spec.core import (
    ActivationLayer,
    AffineLayer,
    DenseLayer,
    DropoutLayer,
    IdentityLayer,
    RescalingLayer,
)

# -- modules with parameters ------------------------------------------------------------------


@TORCH_READ.register("torch.nn.Linear", f"{PARAMETRIZED}Linear", produces=("dense",))
def _linear(module: Any, ctx: ReadContext) -> LayerBase:
    bias = module.bias
    return DenseLayer(
        **ctx.base(),
        units=int(module.out_features),
        in_features=int(module.in_features),
        use_bias=bias is not None,
        weight=module_weight(module, ctx),  # [out, in]: torch is canonical already
        bias=None if bias is None else ctx.tensor("bias", bias),
    )


@TORCH_READ.register("weightio.frameworks.torch.write.quantized.QuantizedLinear", produces=("dense",))
def _quantized_linear(module: Any, ctx: ReadContext) -> LayerBase:
    """Weightio's int8 ``QuantizedLinear`` back to a dense layer with its encoded weight."""
    bias = module.bias
    return DenseLayer(
        **ctx.base(), units=int(module.out_features), in_features=int(module.in_features),
        use_bias=bias is not None, weight=int8_weight(module, ctx),
        bias=None if bias is None else ctx.tensor("bias", bias),
    )


@TORCH_READ.register("weightio.frameworks.torch.write.core.Affine", produces=("affine",))
def _affine(module: Any, ctx: ReadContext) -> LayerBase:
    return AffineLayer(
        **ctx.base(),
        features=int(module.features),
        scale=ctx.tensor("scale", module.scale),
        offset=ctx.tensor("offset", module.offset),
    )


@TORCH_READ.register("weightio.frameworks.torch.write.core.Rescaling", produces=("rescaling",))
def _rescaling(module: Any, ctx: ReadContext) -> LayerBase:
    """Weightio's ``Rescaling`` module back to its kind: the constants, in their dtype."""
    scale, offset = module.scale, module.offset
    return RescalingLayer(
        **ctx.base(),
        scale=tuple(float(v) for v in scale.reshape(-1).tolist()),
        offset=tuple(float(v) for v in offset.reshape(-1).tolist()),
        axis=int(module.axis),
        dtype=torch_dtype_name(scale.dtype),
    )


@TORCH_READ.register(
    "torch.nn.Dropout",
    "torch.nn.Dropout1d",
    "torch.nn.Dropout2d",
    "torch.nn.Dropout3d",
    "torch.nn.AlphaDropout",
    "torch.nn.FeatureAlphaDropout",
    produces=("dropout",),
)
def _dropout_module(module: Any, ctx: ReadContext) -> LayerBase:
    return DropoutLayer(**ctx.base(), rate=float(module.p))


@TORCH_READ.register("torch.nn.Identity", produces=("identity",))
def _identity_module(module: Any, ctx: ReadContext) -> LayerBase:
    return IdentityLayer(**ctx.base())


@TORCH_READ.register("torch.nn.functional.dropout", produces=("dropout",))
def _dropout_function(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    # The model was traced in eval mode, so ``training=self.training`` reads False here; True
    # means the forward passes a constant and drops values even at inference.
    if args["training"] is not False:
        raise ctx.refuse(
            f"training={args['training']!r} applies dropout even in eval mode, which no "
            "exact conversion can reproduce; call it as F.dropout(x, p, training=self.training)"
        )
    return DropoutLayer(**ctx.base(), rate=float(args["p"]))


#: torchvision's ``StochasticDepth`` module, named as data (torchvision is never imported). With
#: a reader it is a leaf for torch.fx, so its ``stochastic_depth`` call is never traced into.
STOCHASTIC_DEPTH_MODULE = "torchvision.ops.stochastic_depth.StochasticDepth"


@TORCH_READ.register(STOCHASTIC_DEPTH_MODULE, produces=("identity",))
def _stochastic_depth_module(module: Any, ctx: ReadContext) -> LayerBase:
    """Eval mode (the model is traced in it) returns the input unchanged: an identity."""
    return IdentityLayer(**ctx.base())


# -- activations ------------------------------------------------------------------------------


def _plain(name: str) -> Callable[..., ActivationFn]:
    def make(ctx: ReadContext) -> ActivationFn:
        return ActivationFn(name=name)  # type: ignore[arg-type]

    return make


def _leaky_relu(ctx: ReadContext, negative_slope: float) -> ActivationFn:
    return ActivationFn(name="leaky_relu", negative_slope=float(negative_slope))


def _elu(ctx: ReadContext, alpha: float) -> ActivationFn:
    return ActivationFn(name="elu", alpha=float(alpha))


def _celu(ctx: ReadContext, alpha: float) -> ActivationFn:
    return ActivationFn(name="celu", alpha=float(alpha))


def _gelu(ctx: ReadContext, approximate: str) -> ActivationFn:
    if approximate not in ("none", "tanh"):
        raise ctx.refuse(f"unknown GELU approximate={approximate!r}; expected 'none' or 'tanh'")
    return ActivationFn(name="gelu", approximate=approximate == "tanh")


def _hard_tanh(ctx: ReadContext, min_val: float, max_val: float) -> ActivationFn:
    """``hard_tanh`` for the default bounds; ``relu6`` for (0, 6), which is what ``nn.ReLU6``
    is in torch (``ReLU6`` subclasses ``Hardtanh``) and what ``torch.export`` records for it
    (``aten.hardtanh(x, 0.0, 6.0)``), so a ``.pt2`` of a MobileNet reads as the module does.
    """
    bounds = (float(min_val), float(max_val))
    if bounds == (0.0, 6.0):
        return ActivationFn(name="relu6")
    if bounds != (-1.0, 1.0):
        raise ctx.refuse(
            f"Hardtanh(min_val={min_val}, max_val={max_val}) has no exact equivalent; only "
            "min_val=-1, max_val=1 (hard_tanh) and min_val=0, max_val=6 (relu6) are supported"
        )
    return ActivationFn(name="hard_tanh")


def _axis(ctx: ReadContext, dim: Any) -> int:
    """Turn a torch ``dim`` into a negative axis, so it means the same whatever the rank."""
    if dim is None:
        raise ctx.refuse(
            "dim=None makes torch guess the axis (deprecated); construct it with an explicit "
            "dim, e.g. nn.Softmax(dim=-1)"
        )
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ctx.refuse(f"dim must be an int. Received: dim={dim!r}")
    if dim < 0:
        return dim
    if ctx.input_rank is None:
        raise ctx.refuse(
            f"dim={dim} cannot be normalised without the input's rank; pass example_input= "
            "or use a negative dim"
        )
    if dim >= ctx.input_rank:
        raise ctx.refuse(f"dim={dim} is out of range for a rank-{ctx.input_rank} input")
    return dim - ctx.input_rank


def _check_no_dtype(ctx: ReadContext, dtype: Any) -> None:
    if dtype is not None:
        raise ctx.refuse(f"dtype={dtype} casts the input first; weightio never casts silently")


def _softmax(ctx: ReadContext, dim: Any, dtype: Any = None) -> ActivationFn:
    _check_no_dtype(ctx, dtype)
    return ActivationFn(name="softmax", axis=_axis(ctx, dim))


def _log_softmax(ctx: ReadContext, dim: Any, dtype: Any = None) -> ActivationFn:
    _check_no_dtype(ctx, dtype)
    return ActivationFn(name="log_softmax", axis=_axis(ctx, dim))


def _softplus(ctx: ReadContext, beta: float, threshold: float) -> ActivationFn:
    # Above the threshold torch returns x itself; from 20 on the gap to log1p(exp(x)) is below
    # 2e-9, under float32 resolution, so only such thresholds count as exact.
    if float(beta) != 1.0 or float(threshold) < 20.0:
        raise ctx.refuse(
            f"Softplus(beta={beta}, threshold={threshold}) has no exact equivalent; only beta=1 "
            "with threshold >= 20 is supported"
        )
    return ActivationFn(name="softplus")


def _soft_shrink(ctx: ReadContext, lambd: float) -> ActivationFn:
    return ActivationFn(name="soft_shrink", threshold=float(lambd))


def _hard_shrink(ctx: ReadContext, lambd: float) -> ActivationFn:
    return ActivationFn(name="hard_shrink", threshold=float(lambd))


@dataclass(frozen=True)
class _Activation:
    """One activation: its maker, module classes, and functional spellings with parameters."""

    make: Callable[..., ActivationFn]
    modules: tuple[str, ...]
    module_attrs: tuple[str, ...] = ()
    functions: Mapping[str, tuple[tuple[str, Any], ...]] = field(default_factory=dict)


_F = "torch.nn.functional."
_INPLACE = (("inplace", False),)
_SOFTMAX_F = (("dim", None), ("_stacklevel", 3), ("dtype", None))
_SOFTMAX_T = (("dim", REQUIRED), ("dtype", None))

_ACTIVATIONS: tuple[_Activation, ...] = (
    _Activation(
        _plain("relu"), ("ReLU",),
        functions={_F + "relu": _INPLACE, "torch.relu": (), "method:relu": ()},
    ),
    _Activation(_plain("relu6"), ("ReLU6",), functions={_F + "relu6": _INPLACE}),
    _Activation(
        _leaky_relu, ("LeakyReLU",), ("negative_slope",),
        functions={_F + "leaky_relu": (("negative_slope", 0.01), *_INPLACE)},
    ),
    _Activation(_elu, ("ELU",), ("alpha",), functions={_F + "elu": (("alpha", 1.0), *_INPLACE)}),
    _Activation(
        _celu, ("CELU",), ("alpha",), functions={_F + "celu": (("alpha", 1.0), *_INPLACE)}
    ),
    _Activation(_plain("selu"), ("SELU",), functions={_F + "selu": _INPLACE, "torch.selu": ()}),
    _Activation(
        _gelu, ("GELU",), ("approximate",), functions={_F + "gelu": (("approximate", "none"),)}
    ),
    _Activation(
        _plain("sigmoid"), ("Sigmoid",),
        functions={"torch.sigmoid": (), _F + "sigmoid": (), "method:sigmoid": ()},
    ),
    _Activation(_plain("log_sigmoid"), ("LogSigmoid",), functions={_F + "logsigmoid": ()}),
    _Activation(_plain("hard_sigmoid"), ("Hardsigmoid",), functions={_F + "hardsigmoid": _INPLACE}),
    _Activation(
        _plain("tanh"), ("Tanh",), functions={"torch.tanh": (), _F + "tanh": (), "method:tanh": ()}
    ),
    _Activation(
        _hard_tanh, ("Hardtanh",), ("min_val", "max_val"),
        functions={_F + "hardtanh": (("min_val", -1.0), ("max_val", 1.0), *_INPLACE)},
    ),
    _Activation(
        _softmax, ("Softmax",), ("dim",),
        functions={_F + "softmax": _SOFTMAX_F, "torch.softmax": _SOFTMAX_T,
                   "method:softmax": _SOFTMAX_T},
    ),
    _Activation(
        _log_softmax, ("LogSoftmax",), ("dim",),
        functions={_F + "log_softmax": _SOFTMAX_F, "torch.log_softmax": _SOFTMAX_T,
                   "method:log_softmax": _SOFTMAX_T},
    ),
    _Activation(
        _softplus, ("Softplus",), ("beta", "threshold"),
        functions={_F + "softplus": (("beta", 1.0), ("threshold", 20.0))},
    ),
    _Activation(_plain("softsign"), ("Softsign",), functions={_F + "softsign": ()}),
    _Activation(_plain("silu"), ("SiLU",), functions={_F + "silu": _INPLACE}),
    _Activation(_plain("hard_silu"), ("Hardswish",), functions={_F + "hardswish": _INPLACE}),
    _Activation(_plain("mish"), ("Mish",), functions={_F + "mish": _INPLACE}),
    _Activation(_plain("tanh_shrink"), ("Tanhshrink",), functions={_F + "tanhshrink": ()}),
    _Activation(
        _soft_shrink, ("Softshrink",), ("lambd",), functions={_F + "softshrink": (("lambd", 0.5),)}
    ),
    _Activation(
        _hard_shrink, ("Hardshrink",), ("lambd",), functions={_F + "hardshrink": (("lambd", 0.5),)}
    ),
)


def _module_reader(act: _Activation) -> ReadFn:
    def read(module: Any, ctx: ReadContext) -> LayerBase:
        params = {attr: getattr(module, attr) for attr in act.module_attrs}
        return ActivationLayer(**ctx.base(), activation=act.make(ctx, **params))

    return read


def _function_reader(act: _Activation) -> ReadFn:
    def read(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
        params = {k: v for k, v in args.items() if k not in IGNORED_PARAMETERS}
        return ActivationLayer(**ctx.base(), activation=act.make(ctx, **params))

    return read


def _register_activations() -> None:
    for act in _ACTIVATIONS:
        keys = tuple(f"torch.nn.{name}" for name in act.modules)
        TORCH_READ.register(*keys, produces=("activation",))(_module_reader(act))
        TORCH_READ.register(*act.functions, produces=("activation",))(_function_reader(act))
        FUNCTION_PARAMETERS.update(act.functions)


_register_activations()
