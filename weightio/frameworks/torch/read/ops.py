"""PyTorch reductions -> spec layers: ``mean``/``amax``/``amin``/``sum`` over given axes.

A mean or max over every spatial axis of a feature map (``x.mean([2, 3])``, shufflenet's and
many classifiers' global pooling) is ``global_pool``, which every framework has as a layer; any
other set of axes is ``reduce``, with the axes counted from the batch as torch counts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightio.frameworks.torch.read.base import FUNCTION_PARAMETERS, TORCH_READ, ReadContext
from weightio.frameworks.torch.read.conv import SHAPE_CHANGING
from weightio.spec.base import LayerBase
from weightio.spec.conv import GlobalPoolLayer
from weightio.spec.ops import ReduceLayer

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
