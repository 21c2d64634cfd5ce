"""PyTorch spatial modules, functions and methods -> spec layers (registered into TORCH_READ).

PyTorch is channels-first like the spec, so weights and feature maps need no transform. What
needs care is padding: an ``int``/tuple padding is recorded as explicit pairs, ``'same'`` as the
spec's ``"same"`` (PyTorch allows it only at stride 1, where it equals Keras's rule), and a pool
with ``ceil_mode=True`` is accepted only where it equals Keras's ``'same'`` for the traced input
size. Settings with no exact equivalent (reflect padding, dilated pooling, ``divisor_override``,
bilinear upsampling…) are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from weightio.frameworks.torch.read.base import (
    FUNCTION_PARAMETERS,
    PARAMETRIZED,
    REQUIRED,
    TORCH_READ,
    ReadContext,
    int8_weight,
    module_weight,
)
from weightio.frameworks.torch.read.static import is_batch
from weightio.layouts.transforms import same_padding
from weightio.spec.base import LayerBase
from weightio.spec.conv import (
    ConvLayer,
    ConvTransposeLayer,
    FlattenLayer,
    GlobalPoolLayer,
    PermuteLayer,
    PoolLayer,
    ReshapeLayer,
    UpSamplingLayer,
    ZeroPaddingLayer,
)

_N = "torch.nn."
_F = "torch.nn.functional."
_RANKS = {"1d": 1, "2d": 2, "3d": 3}

#: Registry keys whose output shape differs from their input's (input-shape inference stops).
SHAPE_CHANGING: set[str] = set()


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    return tuple(int(v) for v in value)


def _spatial_size(ctx: ReadContext, rank: int) -> tuple[int, ...] | None:
    shape = ctx.input_shape
    return None if shape is None or len(shape) != rank + 2 else tuple(shape[2:])


# -- convolutions -----------------------------------------------------------------------------


def _conv_padding(module: Any, ctx: ReadContext, rank: int) -> Any:
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ctx.refuse(
            f"padding_mode={module.padding_mode!r}: only zero padding is mapped exactly"
        )
    padding = module.padding
    if isinstance(padding, str):
        return padding  # 'valid' or 'same' (stride 1 only in torch: equal to Keras 'same')
    pads = _tuple(padding, rank)
    return "valid" if not any(pads) else tuple((p, p) for p in pads)


def _register(keys: list[str], produces: str | tuple[str, ...]) -> Any:
    SHAPE_CHANGING.update(keys)
    return TORCH_READ.register(*keys, produces=(produces,) if isinstance(produces, str) else produces)


@_register([f"{_N}Conv{r}" for r in _RANKS] + [f"{PARAMETRIZED}Conv{r}" for r in _RANKS], "conv")
def _conv(module: Any, ctx: ReadContext) -> LayerBase:
    rank = _RANKS[type(module).__name__[-2:]]
    bias = module.bias
    return ConvLayer(
        **ctx.base(), rank=rank,
        in_channels=int(module.in_channels), out_channels=int(module.out_channels),
        kernel_size=_tuple(module.kernel_size, rank), strides=_tuple(module.stride, rank),
        dilation=_tuple(module.dilation, rank), groups=int(module.groups),
        padding=_conv_padding(module, ctx, rank), use_bias=bias is not None,
        weight=module_weight(module, ctx),
        bias=None if bias is None else ctx.tensor("bias", bias),
    )


@_register(["weightio.frameworks.torch.write.quantized.QuantizedConv"], "conv")
def _quantized_conv(module: Any, ctx: ReadContext) -> LayerBase:
    """Weightio's int8 ``QuantizedConv`` back to a conv layer with its encoded weight."""
    rank, bias = int(module.rank), module.bias
    padding = _tuple(module.padding, rank)
    return ConvLayer(
        **ctx.base(), rank=rank,
        in_channels=int(module.in_channels), out_channels=int(module.out_channels),
        kernel_size=tuple(module.kernel_size), strides=_tuple(module.stride, rank),
        dilation=_tuple(module.dilation, rank), groups=int(module.groups),
        padding="valid" if not any(padding) else tuple((p, p) for p in padding),
        use_bias=bias is not None, weight=int8_weight(module, ctx),
        bias=None if bias is None else ctx.tensor("bias", bias),
    )


@_register([f"{_N}ConvTranspose{r}" for r in _RANKS], "conv_transpose")
def _conv_transpose(module: Any, ctx: ReadContext) -> LayerBase:
    rank = _RANKS[type(module).__name__[-2:]]
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ctx.refuse(f"padding_mode={module.padding_mode!r}: only zeros is supported")
    pads = _tuple(module.padding, rank)
    extra = _tuple(module.output_padding, rank)
    bias = module.bias
    return ConvTransposeLayer(
        **ctx.base(), rank=rank,
        in_channels=int(module.in_channels), out_channels=int(module.out_channels),
        kernel_size=_tuple(module.kernel_size, rank), strides=_tuple(module.stride, rank),
        dilation=_tuple(module.dilation, rank), groups=int(module.groups),
        cropping=tuple((p, p - q) for p, q in zip(pads, extra)),
        use_bias=bias is not None,
        weight=ctx.tensor("weight", module.weight),
        bias=None if bias is None else ctx.tensor("bias", bias),
    )


# -- pooling ----------------------------------------------------------------------------------


def torch_pool_length(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's pooled length (``pooling_output_shape``), dilation 1."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_padding(
    ctx: ReadContext, rank: int, kernel: tuple[int, ...], stride: tuple[int, ...],
    padding: tuple[int, ...], ceil_mode: bool, op: str,
) -> Any:
    """The spec padding of a torch pooling: explicit pairs, or ``'same'`` where equal.

    ``ceil_mode=True`` adds a last, partial window. For max pooling that is exactly extra −∞
    padding after the input (torch never starts a window in the padding), so it becomes pairs
    ``(p, p + extra)`` for the traced size. Average pooling divides a partial window by a count
    no padding reproduces, so it is mapped only where ceil mode changes nothing or equals Keras's
    ``'same'``.
    """
    pairs = tuple((p, p) for p in padding)
    if not ceil_mode:
        return "valid" if not any(padding) else pairs
    size = _spatial_size(ctx, rank)
    if size is None:
        raise ctx.refuse("ceil_mode=True needs the traced input size; pass example_input=")
    lengths = [torch_pool_length(n, k, s, p, True) for n, k, s, p in zip(size, kernel, stride, padding)]
    if all(
        p == same_padding(n, k, s)[0] and length == -(-n // s)
        for n, k, s, p, length in zip(size, kernel, stride, padding, lengths)
    ):
        return "same"
    extra = [max(0, (length - 1) * s + k - (n + 2 * p))
             for n, k, s, p, length in zip(size, kernel, stride, padding, lengths)]
    if not any(extra):
        return "valid" if not any(padding) else pairs
    if op != "max":
        raise ctx.refuse(
            "ceil_mode=True average pooling is mapped only where it equals Keras 'same' pooling "
            f"or plain pooling for the traced input size {size}; here its last window is partial"
        )
    return tuple((p, p + e) for p, e in zip(padding, extra))


def _pool_from(module: Any, ctx: ReadContext, op: str) -> LayerBase:
    rank = _RANKS[type(module).__name__[-2:]]
    if getattr(module, "return_indices", False):
        raise ctx.refuse("return_indices=True returns a tuple; weightio reads tensor outputs")
    if op == "max" and any(d != 1 for d in _tuple(module.dilation, rank)):
        raise ctx.refuse(f"dilation={module.dilation}: dilated pooling has no Keras equivalent")
    if op == "avg" and getattr(module, "divisor_override", None) is not None:
        raise ctx.refuse("divisor_override is not mapped")
    kernel = _tuple(module.kernel_size, rank)
    stride = kernel if module.stride is None else _tuple(module.stride, rank)
    padding = _pool_padding(
        ctx, rank, kernel, stride, _tuple(module.padding, rank), bool(module.ceil_mode), op
    )
    include = bool(getattr(module, "count_include_pad", False)) and padding != "same"
    return PoolLayer(
        **ctx.base(), rank=rank, op=op, pool_size=kernel, strides=stride,
        padding=padding, count_include_pad=include,
    )


@_register([f"{_N}MaxPool{r}" for r in _RANKS], "pool")
def _max_pool(module: Any, ctx: ReadContext) -> LayerBase:
    return _pool_from(module, ctx, "max")


@_register([f"{_N}AvgPool{r}" for r in _RANKS], "pool")
def _avg_pool(module: Any, ctx: ReadContext) -> LayerBase:
    return _pool_from(module, ctx, "avg")


def _adaptive_layer(
    ctx: ReadContext, op: str, rank: int, output_size: Any, return_indices: bool = False
) -> LayerBase:
    """Adaptive pooling as the pooling it is for the traced input size.

    Output size 1 on every axis is global pooling (exact at any input size). Otherwise torch's
    windows are ``[floor(i·n/o), ceil((i+1)·n/o))``; where ``o`` divides ``n`` they are the plain
    pooling of size and stride ``n/o``, exact at the traced size (the one a converted Keras model
    accepts). Where the output is a multiple of the input, each window holds one element: the
    input repeated (nearest upsampling). Otherwise the windows overlap unevenly: refused.
    """
    if return_indices:
        raise ctx.refuse("return_indices=True returns a tuple; weightio reads tensor outputs")
    sizes = (output_size,) * rank if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(sizes) != rank:
        raise ctx.refuse(f"output_size={output_size} does not give {rank} spatial sizes")
    if all(s == 1 for s in sizes):
        return GlobalPoolLayer(**ctx.base(), rank=rank, op=op, keepdims=True)
    size = _spatial_size(ctx, rank)
    if size is None:
        raise ctx.refuse(f"output_size={output_size} needs the traced input size; pass example_input=")
    out = tuple(n if o is None else int(o) for n, o in zip(size, sizes))
    if all(o >= 1 and n % o == 0 for n, o in zip(size, out)):
        window = tuple(n // o for n, o in zip(size, out))
        return PoolLayer(**ctx.base(), rank=rank, op=op, pool_size=window, strides=window)
    if all(o % n == 0 for n, o in zip(size, out)):
        # o = k·n: each window [floor(i/k), ceil((i+1)/k)) holds one element, so the output
        # repeats each input k times (alexnet's 6×6 pooling of a 1×1 map at a small input).
        return UpSamplingLayer(**ctx.base(), rank=rank, size=tuple(o // n for n, o in zip(size, out)))
    raise ctx.refuse(
        f"output_size={output_size} on input size {size}: adaptive pooling is mapped where the "
        "output size divides the input size (a plain pooling), is a multiple of it (each element "
        "repeated) or is 1 (global pooling)"
    )


def _adaptive(op: str) -> Any:
    def read(module: Any, ctx: ReadContext) -> LayerBase:
        rank = _RANKS[type(module).__name__[-2:]]
        return _adaptive_layer(
            ctx, op, rank, module.output_size, bool(getattr(module, "return_indices", False))
        )

    return read


def _adaptive_function(op: str, rank: int) -> Any:
    def read(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
        return _adaptive_layer(ctx, op, rank, args["output_size"], bool(args.get("return_indices")))

    return read


_ADAPTIVE_KINDS = ("global_pool", "pool", "upsampling")
_register([f"{_N}AdaptiveAvgPool{r}" for r in _RANKS], _ADAPTIVE_KINDS)(_adaptive("avg"))
_register([f"{_N}AdaptiveMaxPool{r}" for r in _RANKS], _ADAPTIVE_KINDS)(_adaptive("max"))
for _suffix, _rank in _RANKS.items():
    _register([f"{_F}adaptive_avg_pool{_suffix}"], _ADAPTIVE_KINDS)(_adaptive_function("avg", _rank))
    _register([f"{_F}adaptive_max_pool{_suffix}"], _ADAPTIVE_KINDS)(_adaptive_function("max", _rank))
    FUNCTION_PARAMETERS[f"{_F}adaptive_avg_pool{_suffix}"] = (("output_size", REQUIRED),)
    FUNCTION_PARAMETERS[f"{_F}adaptive_max_pool{_suffix}"] = (
        ("output_size", REQUIRED), ("return_indices", False),
    )


# -- padding, upsampling ----------------------------------------------------------------------


def _pairs_from_torch(pad: tuple[int, ...], rank: int) -> tuple[tuple[int, int], ...]:
    """Torch's ``(last_before, last_after, prev_before, …)`` -> ``[(before, after)]`` in axis order."""
    pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(pad) // 2)]
    return tuple(reversed(pairs))


@_register(
    [f"{_N}ZeroPad{r}" for r in _RANKS] + [f"{_N}ConstantPad{r}" for r in _RANKS], "zero_padding"
)
def _zero_pad(module: Any, ctx: ReadContext) -> LayerBase:
    rank = _RANKS[type(module).__name__[-2:]]
    if float(module.value) != 0.0:
        raise ctx.refuse(f"value={module.value}: only zero padding is mapped")
    pad = _tuple(module.padding, 2 * rank)
    return ZeroPaddingLayer(**ctx.base(), rank=rank, padding=_pairs_from_torch(pad, rank))


@_register([f"{_N}Upsample", f"{_N}UpsamplingNearest2d"], "upsampling")
def _upsample(module: Any, ctx: ReadContext) -> LayerBase:
    if ctx.input_rank is None or ctx.input_rank < 3:
        raise ctx.refuse("upsampling needs a traced [N, C, *spatial] input; pass example_input=")
    rank = ctx.input_rank - 2
    if getattr(module, "mode", "nearest") != "nearest":
        raise ctx.refuse(f"mode={module.mode!r}: only 'nearest' is mapped exactly")
    factor = module.scale_factor
    if module.size is not None or factor is None:
        raise ctx.refuse("give scale_factor (integers), not size")
    factors = (factor,) * rank if not isinstance(factor, (tuple, list)) else tuple(factor)
    if any(float(f) != int(f) or int(f) < 1 for f in factors):
        raise ctx.refuse(f"scale_factor={factor}: only integer factors are exact")
    return UpSamplingLayer(**ctx.base(), rank=rank, size=tuple(int(f) for f in factors))


# -- flatten, reshape, permute ----------------------------------------------------------------


def _flatten_layer(ctx: ReadContext, start: int, end: int) -> LayerBase:
    rank = ctx.input_rank
    if start != 1 or end not in (-1, (rank - 1) if rank else -1):
        raise ctx.refuse(
            f"flatten(start_dim={start}, end_dim={end}): only start_dim=1, end_dim=-1 "
            "(flatten all but the batch) is mapped"
        )
    return FlattenLayer(**ctx.base(), order="channels_first")


@_register([f"{_N}Flatten"], "flatten")
def _flatten_module(module: Any, ctx: ReadContext) -> LayerBase:
    return _flatten_layer(ctx, int(module.start_dim), int(module.end_dim))


@_register(["torch.flatten", "method:flatten"], "flatten")
def _flatten_function(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    return _flatten_layer(ctx, int(args["start_dim"]), int(args["end_dim"]))


FUNCTION_PARAMETERS["torch.flatten"] = (("start_dim", 0), ("end_dim", -1))
FUNCTION_PARAMETERS["method:flatten"] = (("start_dim", 0), ("end_dim", -1))


@_register([f"{_N}Unflatten"], "reshape")
def _unflatten(module: Any, ctx: ReadContext) -> LayerBase:
    shape = ctx.input_shape
    if int(module.dim) != 1 or shape is None:
        raise ctx.refuse("only Unflatten(1, sizes) on a traced input is mapped")
    target = (*[int(s) for s in module.unflattened_size], *shape[2:])
    return ReshapeLayer(**ctx.base(), target_shape=target)


_VARARGS = tuple((f"d{i}", None) for i in range(8))


def _shape_args(args: Mapping[str, Any], key: str) -> tuple[int, ...]:
    values = [args[k] for k in sorted(args) if k.startswith("d") and args[k] is not None]
    if "shape" in args:
        values = [args["shape"]]
    if len(values) == 1 and isinstance(values[0], (tuple, list)):
        values = list(values[0])
    if values and is_batch(values[0]):  # view(x.size(0), …): the batch, as view(-1, …)
        values[0] = -1
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(key)
    return tuple(values)


def _known_rest(shape: tuple[int, ...], ctx: ReadContext) -> tuple[int, ...]:
    """``view(batch, -1, k)``: the one -1 after the batch, from the traced input's size."""
    rest = shape[1:]
    if rest.count(-1) != 1 or shape[0] != -1 or ctx.input_shape is None:
        return shape
    total = math.prod(ctx.input_shape[1:])
    known = math.prod(d for d in rest if d != -1)
    if known <= 0 or total % known:
        return shape
    return (-1, *(total // known if d == -1 else d for d in rest))


@_register(["method:view", "method:reshape", "torch.reshape"], "reshape")
def _reshape(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    try:
        shape = _shape_args(args, "shape")
    except ValueError:
        raise ctx.refuse("the target shape must be constant integers") from None
    if shape and shape[0] == -1:
        shape = _known_rest(shape, ctx)
    if len(shape) < 2 or shape[0] != -1 or -1 in shape[1:]:
        raise ctx.refuse(
            f"shape {list(shape)}: write the batch as -1 and the rest as constants, e.g. "
            "x.view(-1, 64) (or use nn.Flatten)"
        )
    return ReshapeLayer(**ctx.base(), target_shape=shape[1:])


FUNCTION_PARAMETERS["method:view"] = _VARARGS
FUNCTION_PARAMETERS["method:reshape"] = _VARARGS
FUNCTION_PARAMETERS["torch.reshape"] = (("shape", REQUIRED),)


@_register(["method:permute", "torch.permute"], "permute")
def _permute(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    try:
        dims = _shape_args({"shape": args["dims"]} if "dims" in args else args, "dims")
    except ValueError:
        raise ctx.refuse("dims must be constant integers") from None
    rank = ctx.input_rank or len(dims)
    dims = tuple(d % rank for d in dims)
    if not dims or dims[0] != 0:
        raise ctx.refuse(f"dims {list(dims)} move the batch axis; only 0 first is mapped")
    return PermuteLayer(**ctx.base(), dims=dims[1:])


@_register(["method:transpose", "torch.transpose"], "permute")
def _transpose(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    """``x.transpose(a, b)``: the permutation swapping two non-batch axes."""
    rank = ctx.input_rank
    a, b = args["dim0"], args["dim1"]
    if rank is None or not all(isinstance(d, int) and not isinstance(d, bool) for d in (a, b)):
        raise ctx.refuse("transpose needs constant dims and a traced input; pass example_input=")
    a, b = a % rank, b % rank
    if 0 in (a, b):
        raise ctx.refuse(f"transpose({a}, {b}) moves the batch axis; only non-batch axes are mapped")
    dims = list(range(rank))
    dims[a], dims[b] = dims[b], dims[a]
    return PermuteLayer(**ctx.base(), dims=tuple(dims[1:]))


FUNCTION_PARAMETERS["method:transpose"] = (("dim0", REQUIRED), ("dim1", REQUIRED))
FUNCTION_PARAMETERS["torch.transpose"] = (("dim0", REQUIRED), ("dim1", REQUIRED))
FUNCTION_PARAMETERS["method:permute"] = _VARARGS
FUNCTION_PARAMETERS["torch.permute"] = (("dims", REQUIRED),)


@_register([_F + "pad"], "zero_padding")
def _pad_function(args: Mapping[str, Any], ctx: ReadContext) -> LayerBase:
    if args["mode"] != "constant" or args["value"] not in (None, 0, 0.0):
        raise ctx.refuse(f"mode={args['mode']!r}, value={args['value']}: only zero padding is mapped")
    pad = tuple(int(p) for p in args["pad"])
    rank = (ctx.input_rank or 0) - 2
    if len(pad) % 2 or rank < 1 or len(pad) // 2 > rank:
        raise ctx.refuse(f"pad={list(pad)} must pad spatial axes of a [N, C, *spatial] input")
    pad = pad + (0, 0) * (rank - len(pad) // 2)
    return ZeroPaddingLayer(**ctx.base(), rank=rank, padding=_pairs_from_torch(pad, rank))


FUNCTION_PARAMETERS[_F + "pad"] = (("pad", REQUIRED), ("mode", "constant"), ("value", None))
