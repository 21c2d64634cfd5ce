"""PyTorch reductions -> spec layers: ``mean``/``amax``/``amin``/``sum`` over given axes.

A mean or max over every spatial axis of a feature map (``x.mean([2, 3])``, shufflenet's and
many classifiers' global pooling) is ``global_pool``, which every framework has as a layer; any
other set of axes is ``reduce``, with the axes counted from the batch as torch counts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightio.frameworks.torch.read.base import (
    FUNCTION_PARAMETERS,
    PARAMETER_KEYS,
    TORCH_READ,
    ReadContext,
    StoredTensor,
)
from weightio.frameworks.torch.read.conv import SHAPE_CHANGING
from weightio.frameworks.torch.read.static import is_batch
from weightio.spec.base import LayerBase
from weightio.spec.conv import GlobalPoolLayer
from weightio.spec.ops import ParameterLayer, ReduceLayer

#: Registry key prefix -> (spec reduce op, the name of the keep-dims argument).
_REDUCTIONS = {"mean": "mean", "amax": "max", "amin": "min", "sum": "sum"}


def _axes(ctx: ReadContext, dim: Any) -> tuple[int, ...]:
    rank = ctx.input_rank
    if rank is None:
        raise ctx.refuse("a reduction needs the traced input's rank; pass example_input=")
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if dims is None or not isinstance(dims, (tuple, list)) or not dims or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    ):
        raise ctx.refuse(f"dim={dim!r}: give the reduced axes as constant integers")
    axes = tuple(sorted({d % rank for d in dims}))
    if 0 in axes:
        raise ctx.refuse(f"dim={dim!r} reduces the batch axis; only non-batch axes are mapped")
    return axes


def _reader(op: str) -> Any:
    def read(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
        if args.get("dtype") is not None:
            raise ctx.refuse(f"dtype={args['dtype']} casts the input first; weightio never casts silently")
        axes = _axes(ctx, args["dim"])
        keepdims = bool(args["keepdim"])
        rank = ctx.input_rank or 0
        if op in ("mean", "max") and rank >= 3 and axes == tuple(range(2, rank)):
            return GlobalPoolLayer(
                **ctx.base(), rank=rank - 2, op="avg" if op == "mean" else "max", keepdims=keepdims
            )
        return ReduceLayer(**ctx.base(), op=op, axes=axes, keepdims=keepdims, input_rank=rank)

    return read


def _register() -> None:
    for name, op in _REDUCTIONS.items():
        keys = [f"method:{name}", f"torch.{name}"]
        SHAPE_CHANGING.update(keys)
        TORCH_READ.register(*keys, produces=("reduce", "global_pool"))(_reader(op))
        extra = (("dtype", None),) if name in ("mean", "sum") else ()
        for key in keys:
            FUNCTION_PARAMETERS[key] = (("dim", None), ("keepdim", False), *extra)


_register()


# -- a parameter repeated over the batch --------------------------------------------------------

_EXPAND = "method:expand"


@TORCH_READ.register(_EXPAND, produces=("parameter",))
def _expand(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``self.class_token.expand(x.shape[0], -1, -1)`` (ViT's class token): the stored tensor,
    its leading axis of 1 dropped, repeated over the batch of ``x``. Stored under its state-dict
    key without that axis (the spec's values have no batch axis).
    """
    stored = ctx.data
    sizes = [args[k] for k in sorted(args) if k.startswith("d") and args[k] is not None]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = list(sizes[0])
    if not isinstance(stored, StoredTensor):
        raise ctx.refuse("expand of a traced tensor is not mapped; weightio reads a stored parameter "
                         "expanded over the batch (self.class_token.expand(n, -1, -1))")
    value = stored.value
    rest = sizes[1:]
    if (
        not sizes or not is_batch(sizes[0]) or len(sizes) != value.dim() or int(value.shape[0]) != 1
        or not all(s == -1 or s == int(d) for s, d in zip(rest, value.shape[1:]))
        or len(ctx.inputs) != 1
    ):
        raise ctx.refuse(
            f"expand{tuple(sizes)} of {stored.key!r} (shape {list(value.shape)}): weightio reads a "
            "parameter with a leading axis of 1 expanded to the batch size x.shape[0] and -1 elsewhere"
        )
    return ParameterLayer(**ctx.base(), value=ctx.tensor(stored.key, value[0]))


FUNCTION_PARAMETERS[_EXPAND] = tuple((f"d{i}", None) for i in range(8))
PARAMETER_KEYS.add(_EXPAND)
