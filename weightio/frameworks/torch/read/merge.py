"""PyTorch graph operations (add, cat, getitem…) -> spec layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightio.frameworks.torch.read.base import (
    FUNCTION_PARAMETERS,
    PARAMETER_KEYS,
    REQUIRED,
    TORCH_READ,
    ReadContext,
    StoredTensor,
)
from weightio.frameworks.torch.read.tuples import GETITEM_TAG
from weightio.spec.base import LayerBase
from weightio.spec.conv import ReshapeLayer
from weightio.spec.core import IdentityLayer
from weightio.spec.merge import ConcatenateLayer, LastStepLayer, MergeLayer
from weightio.spec.ops import ArithmeticLayer, SliceLayer

# -- graph operations -----------------------------------------------------------------------


def _is_node(value: Any) -> bool:
    return hasattr(value, "op") and hasattr(value, "meta")


def _rank_of(node: Any) -> int | None:
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return None if shape is None else len(shape)


_BINARY = {
    "operator.add": "add",
    "torch.add": "add",
    "operator.sub": "subtract",
    "torch.sub": "subtract",
    "operator.mul": "multiply",
    "torch.mul": "multiply",
    "torch.maximum": "maximum",
    "torch.minimum": "minimum",
}


def _with_stored(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``self.layer_scale * x``, ``x + self.pos_embedding``: an arithmetic layer whose constant
    is the stored tensor (learned), broadcasting against the input without its batch axis.
    """
    first = isinstance(ctx.data, StoredTensor)
    stored = ctx.data if first else args["other"]
    if first and isinstance(args["other"], StoredTensor) or len(ctx.inputs) != 1:
        raise ctx.refuse("operates on two stored tensors; weightio reads one with a traced tensor")
    traced = args["other"] if first else ctx.data
    shape = getattr(traced.meta.get("tensor_meta"), "shape", None) if _is_node(traced) else None
    value = stored.value
    if shape is not None and value.dim() == len(shape) and int(value.shape[0]) == 1:
        value = value[0]  # ViT's pos_embedding [1, T, E]: the same numbers, without the batch axis
    if shape is None or value.dim() > len(shape) - 1:
        raise ctx.refuse(
            f"the stored tensor {stored.key!r} of shape {list(value.shape)} must broadcast "
            "against the input without its batch axis"
        )
    if args.get("alpha", 1) != 1:
        raise ctx.refuse(f"alpha={args['alpha']} scales the second operand; only alpha=1 maps")
    return ArithmeticLayer(
        **ctx.base(), op=_BINARY[ctx.source], constant_first=first, learned=True,
        constant=ctx.tensor(stored.key, value),
    )


def _binary(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``a + b``, ``a - b``, ``a * b``, ``torch.maximum(a, b)`` between two traced tensors."""
    if isinstance(ctx.data, StoredTensor) or isinstance(args["other"], StoredTensor):
        return _with_stored(args, ctx)
    if not _is_node(args["other"]):
        raise ctx.refuse(
            f"operates on a tensor and the constant {args['other']!r}; weightio reads it only "
            "between two layer outputs (e.g. the residual x + self.fc(x))"
        )
    if args.get("alpha", 1) != 1:
        raise ctx.refuse(f"alpha={args['alpha']} scales the second operand; only alpha=1 maps")
    if len(ctx.inputs) != 2:
        raise ctx.refuse("expects two distinct traced tensors")
    return MergeLayer(**ctx.base(), kind=_BINARY[ctx.source])  # type: ignore[arg-type]


PARAMETER_KEYS.update(_BINARY)
for _key in _BINARY:
    TORCH_READ.register(_key, produces=(_BINARY[_key], "arithmetic"))(_binary)
    FUNCTION_PARAMETERS[_key] = (("other", REQUIRED),) + (
        (("alpha", 1),) if _key in ("torch.add", "torch.sub") else ()
    )


@TORCH_READ.register("torch.cat", "torch.concat", produces=("concatenate", "identity"))
def _cat(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``torch.cat([a, b], dim)``: the dim as a negative axis (batch counted), as Keras writes."""
    dim = args["dim"]
    if len(ctx.inputs) == 1:
        return IdentityLayer(**ctx.base())  # torch.cat([x]) is x (densenet's first layers)
    if len(ctx.inputs) < 2:
        raise ctx.refuse("concatenates fewer than two traced tensors")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ctx.refuse(f"dim must be an int. Received: dim={dim!r}")
    rank = ctx.input_rank
    if dim >= 0:
        if rank is None:
            raise ctx.refuse("dim cannot be normalised without the rank; pass example_input=")
        dim -= rank
    if rank is not None and dim <= -rank:
        raise ctx.refuse("concatenates along the batch axis")
    return ConcatenateLayer(**ctx.base(), axis=dim)


FUNCTION_PARAMETERS["torch.cat"] = (("dim", 0),)
FUNCTION_PARAMETERS["torch.concat"] = (("dim", 0),)
FUNCTION_PARAMETERS["operator.getitem"] = (("index", REQUIRED),)


def _full(value: Any) -> bool:
    return isinstance(value, slice) and value == slice(None)


def _int_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _one_slice(index: Any) -> tuple[int, slice] | None:
    """``x[:, a:b]``, ``x[:, :, a:b:s]``…: the axis and slice when exactly one axis after the
    batch is sliced (by constants, positive step) and the others are whole.
    """
    if not isinstance(index, tuple) or len(index) < 2 or not all(isinstance(i, slice) for i in index):
        return None
    cut = [axis for axis, piece in enumerate(index) if not _full(piece)]
    if len(cut) != 1 or cut[0] == 0:
        return None
    piece = index[cut[0]]
    if not all(_int_or_none(v) for v in (piece.start, piece.stop, piece.step)):
        return None
    if piece.step is not None and piece.step <= 0:
        return None
    return cut[0], piece


def _one_index(index: Any, shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    """``x[:, 0]`` (ViT's class token), ``x[:, :, 2]``: the axis and the non-negative index when
    exactly one axis after the batch is indexed by a constant and the others are whole (on a
    tensor of rank 3 or more: something must remain besides the batch).
    """
    if not isinstance(index, tuple) or len(index) < 2 or shape is None or len(index) > len(shape) or len(shape) < 3:
        return None
    picks = [axis for axis, piece in enumerate(index) if not _full(piece)]
    if len(picks) != 1 or picks[0] == 0:
        return None
    axis, value = picks[0], index[picks[0]]
    if not isinstance(value, int) or isinstance(value, bool) or not -shape[axis] <= value < shape[axis]:
        return None
    return axis, value % shape[axis]


@TORCH_READ.register("operator.getitem", produces=("last_step", "slice", "reshape"))
def _getitem(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``x[:, -1]``/``x[:, -1, :]`` is a last step; ``result[0]``, ``[1]``, ``[-1]``… are tuple
    picks resolved by ``resolve_tuples``.
    """
    index = args["index"]
    if (
        isinstance(index, tuple)
        and len(index) in (2, 3)
        and _full(index[0])
        and index[1] == -1
        and all(_full(i) for i in index[2:])
    ):
        return LastStepLayer(**ctx.base())
    sliced = _one_slice(index)
    if sliced is not None:
        axis, piece = sliced
        return SliceLayer(**ctx.base(), axis=axis, start=0 if piece.start is None else piece.start,
                          stop=piece.stop, step=1 if piece.step is None else piece.step)
    picked = _one_index(index, ctx.input_shape)
    if picked is not None:
        axis, start = picked
        cut = SliceLayer(**{**ctx.base(), "name": ctx.fresh_name("slice")}, axis=axis, start=start, stop=start + 1)
        shape = tuple(d for i, d in enumerate(ctx.input_shape or ()) if i not in (0, axis))
        return [cut, ReshapeLayer(**{**ctx.base(), "inputs": [cut.name]}, target_shape=shape)]
    if isinstance(index, int) and not isinstance(index, bool) and index in (0, 1, -1, -2):
        return IdentityLayer(**{**ctx.base(), "source_class": f"{GETITEM_TAG}{index}"})
    raise ctx.refuse(
        f"indexing with {index!r}: weightio reads a recurrent module's (output, h_n) and a "
        "sequence's last step x[:, -1]"
    )
