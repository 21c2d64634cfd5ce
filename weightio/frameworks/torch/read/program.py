"""Read a ``torch.export`` program (``ExportedProgram``) through the module reader.

A program's module (``program.module()``) is an ATen graph: ``aten.linear(x, w, b)`` where the
source had an ``nn.Linear``, parameters read by ``get_attr`` under their state-dict keys, and a
``_guards_fn`` call checking input shapes. The module reader (``trace.py``) reads ``nn`` modules
and ``torch`` functions, so this adapter rebuilds the graph in those terms: each ATen call that
carries parameters becomes the ``nn`` module it came from, installed at the path its weight's key
names (``0.weight`` -> module ``0``), so the archive's tensor keys are the program's state-dict
keys; other ATen calls become the ``torch`` function of the same meaning; the guard call is
dropped. An ATen operation without a mapping is refused by node name (``UnsupportedLayerError``):
a weights-only fallback would only move the refusal to ``convert``, and ``inspect`` of the
weights alone is a ``torch.save(program.state_dict, ...)`` away.

Two decodings feeding a Linear/Conv become modules again: ``aten._weight_norm`` of a
parametrization's ``original0/1`` (torch's ``parametrizations.weight_norm``) and the int8 decoding
of weightio's ``QuantizedLinear``/``QuantizedConv`` (``weight_int8``, ``scale``, ``zero_point``
buffers; checked bit for bit against the module's own decoding), so both read in their encoded
form (format 1.2).

The mapping covers what ``torch.export`` makes of the modules weightio writes and of plain
Linear/Conv/BatchNorm/pooling/activation models; it grows by one entry per operation.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import ValidationError

from weightio.errors import TraceError, UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import numpy_to_tensor, tensor_to_numpy, torch_module
from weightio.frameworks.torch.read.trace import SOURCE_KEY, read_torch_module

#: What the archive records as its source class (not the rebuilt GraphModule's local class).
PROGRAM_CLASS = "torch.export.ExportedProgram"
ModuleMaker = Callable[[Any, list[Any], int], Any]


def _ints(value: Any, n: int, default: int) -> tuple[int, ...]:
    """An ATen int list (``[1]`` broadcast, ``[]`` the default) as ``n`` ints."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        items = [default]
    if len(items) == 1:
        items = items * n
    return tuple(int(i) for i in items)


def _arg(args: list[Any], index: int, default: Any) -> Any:
    return args[index] if len(args) > index else default


def _linear(nn: Any, args: list[Any], rank: int) -> Any:
    weight, bias = args[1], _arg(args, 2, None)
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    return module, {"weight": weight, "bias": bias}


def _conv(dims: int) -> ModuleMaker:
    def make(nn: Any, args: list[Any], rank: int) -> Any:
        weight, bias = args[1], _arg(args, 2, None)
        padding = _arg(args, 4, [0])
        groups = int(_arg(args, 6, 1))
        cls = getattr(nn, f"Conv{dims}d")
        module = cls(
            weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
            stride=_ints(_arg(args, 3, [1]), dims, 1),
            padding=padding if isinstance(padding, str) else _ints(padding, dims, 0),
            dilation=_ints(_arg(args, 5, [1]), dims, 1), groups=groups, bias=bias is not None,
        )
        return module, {"weight": weight, "bias": bias}

    return make


def _batch_norm(nn: Any, args: list[Any], rank: int) -> Any:
    weight, bias, mean, var = args[1], args[2], args[3], args[4]
    if mean is None or var is None:
        raise ValueError("batch norm without running statistics")
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        raise ValueError(f"batch norm of a rank-{rank} input")
    module = cls(mean.shape[0], eps=float(_arg(args, 7, 1e-5)), momentum=float(_arg(args, 6, 0.1)),
                 affine=weight is not None)
    return module, {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var}


def _conv_transpose(dims: int) -> ModuleMaker:
    def make(nn: Any, args: list[Any], rank: int) -> Any:
        weight, bias = args[1], _arg(args, 2, None)
        groups = int(_arg(args, 6, 1))
        cls = getattr(nn, f"ConvTranspose{dims}d")
        module = cls(
            weight.shape[0], weight.shape[1] * groups, tuple(weight.shape[2:]),
            stride=_ints(_arg(args, 3, [1]), dims, 1), padding=_ints(_arg(args, 4, [0]), dims, 0),
            output_padding=_ints(_arg(args, 5, [0]), dims, 0), groups=groups,
            dilation=_ints(_arg(args, 7, [1]), dims, 1), bias=bias is not None,
        )
        return module, {"weight": weight, "bias": bias}

    return make


def _layer_norm(nn: Any, args: list[Any], rank: int) -> Any:
    shape, weight, bias = tuple(args[1]), _arg(args, 2, None), _arg(args, 3, None)
    if weight is None and bias is not None:
        raise ValueError("layer norm with a bias but no weight")
    module = nn.LayerNorm(shape, eps=float(_arg(args, 4, 1e-5)),
                          elementwise_affine=weight is not None, bias=bias is not None)
    return module, {"weight": weight, "bias": bias}


def _group_norm(nn: Any, args: list[Any], rank: int) -> Any:
    groups, weight, bias = int(args[1]), _arg(args, 2, None), _arg(args, 3, None)
    if (weight is None) != (bias is None):
        raise ValueError("group norm with only one of weight and bias")
    channels = weight.shape[0] if weight is not None else None
    if channels is None:
        raise ValueError("group norm without an affine transform")
    module = nn.GroupNorm(groups, channels, eps=float(_arg(args, 4, 1e-5)))
    return module, {"weight": weight, "bias": bias}


def _unflatten(nn: Any, args: list[Any], rank: int) -> Any:
    return nn.Unflatten(int(args[1]), tuple(int(d) for d in args[2])), {}


def _upsample_nearest(nn: Any, args: list[Any], rank: int) -> Any:
    size, scales = _arg(args, 1, None), _arg(args, 2, None)
    if size is not None or scales is None:
        raise ValueError("nearest upsampling to a given size, not by a scale")
    return nn.Upsample(scale_factor=tuple(float(f) for f in scales), mode="nearest"), {}


def _max_pool(dims: int) -> ModuleMaker:
    def make(nn: Any, args: list[Any], rank: int) -> Any:
        kernel = _ints(args[1], dims, 1)
        stride = _arg(args, 2, [])
        cls = getattr(nn, f"MaxPool{dims}d")
        return cls(kernel, stride=_ints(stride, dims, 1) if stride else kernel,
                   padding=_ints(_arg(args, 3, 0), dims, 0),
                   dilation=_ints(_arg(args, 4, 1), dims, 1),
                   ceil_mode=bool(_arg(args, 5, False))), {}

    return make


def _avg_pool(dims: int) -> ModuleMaker:
    def make(nn: Any, args: list[Any], rank: int) -> Any:
        kernel = _ints(args[1], dims, 1)
        stride = _arg(args, 2, [])
        cls = getattr(nn, f"AvgPool{dims}d")
        options: dict[str, Any] = {"count_include_pad": bool(_arg(args, 5, True))}
        if dims > 1 and _arg(args, 6, None) is not None:
            options["divisor_override"] = int(args[6])
        return cls(kernel, stride=_ints(stride, dims, 1) if stride else kernel,
                   padding=_ints(_arg(args, 3, 0), dims, 0),
                   ceil_mode=bool(_arg(args, 4, False)), **options), {}

    return make


def _module_ops(aten: Any) -> dict[Any, ModuleMaker]:
    """ATen calls that become the ``nn`` module they came from."""
    return {
        aten.linear.default: _linear,
        aten.conv1d.default: _conv(1),
        aten.conv2d.default: _conv(2),
        aten.conv3d.default: _conv(3),
        aten.conv1d.padding: _conv(1),
        aten.conv2d.padding: _conv(2),
        aten.conv3d.padding: _conv(3),
        aten.conv_transpose1d.default: _conv_transpose(1),
        aten.conv_transpose2d.input: _conv_transpose(2),
        aten.conv_transpose3d.input: _conv_transpose(3),
        aten.batch_norm.default: _batch_norm,
        aten.layer_norm.default: _layer_norm,
        aten.group_norm.default: _group_norm,
        aten.unflatten.int: _unflatten,
        aten.upsample_nearest1d.vec: _upsample_nearest,
        aten.upsample_nearest2d.vec: _upsample_nearest,
        aten.upsample_nearest3d.vec: _upsample_nearest,
        aten.max_pool1d.default: _max_pool(1),
        aten.max_pool2d.default: _max_pool(2),
        aten.max_pool3d.default: _max_pool(3),
        aten.avg_pool1d.default: _avg_pool(1),
        aten.avg_pool2d.default: _avg_pool(2),
        aten.avg_pool3d.default: _avg_pool(3),
    }


def _function_ops(torch: Any) -> dict[Any, Any]:
    """ATen calls that become the ``torch`` function of the same meaning and arguments."""
    aten, F = torch.ops.aten, torch.nn.functional
    return {
        aten.relu.default: torch.relu,
        aten.relu_.default: torch.relu,
        aten.sigmoid.default: torch.sigmoid,
        aten.tanh.default: torch.tanh,
        aten.gelu.default: F.gelu,
        aten.silu.default: F.silu,
        aten.elu.default: F.elu,
        aten.relu6.default: F.relu6,
        aten.celu.default: F.celu,
        aten.selu.default: torch.selu,
        aten.log_sigmoid.default: F.logsigmoid,
        aten.hardsigmoid.default: F.hardsigmoid,
        aten.hardswish.default: F.hardswish,
        aten.mish.default: F.mish,
        aten.softshrink.default: F.softshrink,
        aten.hardshrink.default: F.hardshrink,
        aten.leaky_relu.default: F.leaky_relu,
        aten.hardtanh.default: F.hardtanh,
        aten.softplus.default: F.softplus,
        aten.softmax.int: torch.softmax,
        aten.log_softmax.int: torch.log_softmax,
        aten.flatten.using_ints: torch.flatten,
        aten.view.default: torch.reshape,
        aten.reshape.default: torch.reshape,
        aten.permute.default: torch.permute,
        aten.transpose.int: torch.transpose,
        aten.add.Tensor: torch.add,
        aten.sub.Tensor: torch.sub,
        aten.mul.Tensor: torch.mul,
        aten.cat.default: torch.cat,
        aten.mean.dim: torch.mean,
        aten.sum.dim_IntList: torch.sum,
        aten.amax.default: torch.amax,
        aten.amin.default: torch.amin,
        aten.maximum.default: torch.maximum,
        aten.minimum.default: torch.minimum,
        aten.adaptive_avg_pool1d.default: F.adaptive_avg_pool1d,
        aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
        aten.adaptive_avg_pool3d.default: F.adaptive_avg_pool3d,
        aten.pad.default: F.pad,
        operator.getitem: operator.getitem,
        # integer arithmetic on sizes, which the reader settles for the traced size
        operator.add: operator.add,
        operator.sub: operator.sub,
        operator.mul: operator.mul,
        operator.floordiv: operator.floordiv,
    }


def _identities(aten: Any) -> set[Any]:
    """ATen calls that compute their input in eval mode (dropout) or only copy it."""
    return {aten.clone.default, aten.alias.default, aten.contiguous.default, aten.detach.default}


def _stored(gm: Any, key: str) -> Any:
    owner, _, name = key.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def install(root: Any, path: str, value: Any, nn: Any) -> None:
    """Put a module (or tensor) at dotted ``path`` under ``root``, creating containers."""
    parts = path.split(".")
    owner = root
    for part in parts[:-1]:
        if not hasattr(owner, part):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    if hasattr(owner, parts[-1]):
        raise ValueError(f"{path!r} is used twice")
    if isinstance(value, nn.Module):
        owner.add_module(parts[-1], value)
    elif isinstance(value, nn.Parameter):
        owner.register_parameter(parts[-1], value)
    else:
        owner.register_buffer(parts[-1], value)


def _refuse(node: Any, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"the program's node {node.name!r} ({node.target}) {why}; weightio reads programs of "
        "nn modules and torch functions it knows (docs/layers.md)", layer=node.name,
    )


class Rebuild:
    """One pass over the program's graph, building the module-level graph and its root."""

    def __init__(self, torch: Any, gm: Any) -> None:
        self.torch, self.nn, self.gm = torch, torch.nn, gm
        self.root = torch.nn.Module()
        self.graph = torch.fx.Graph()
        self.env: dict[Any, Any] = {}
        self.keys: dict[Any, str] = {}  # get_attr node -> state-dict key
        self.emitted: dict[str, Any] = {}
        aten = torch.ops.aten
        self.module_ops = _module_ops(aten)
        self.function_ops = _function_ops(torch)
        self.identities = _identities(aten)
        self.checks = {aten._assert_tensor_metadata.default}
        #: ``aten._weight_norm`` nodes of a parametrized Linear/Conv: (owner path, v, g, dim).
        self.weight_norms: dict[Any, tuple[str, Any, Any, int]] = {}
        #: Nodes decoding the int8 weight of weightio's QuantizedLinear/QuantizedConv: owner path.
        self.int8: dict[Any, str] = {}
        self.int8_ops = {aten.to.dtype, aten._to_copy.default, aten.reshape.default,
                         aten.view.default, aten.sub.Tensor, aten.mul.Tensor}
        self.in_place = {aten.add_.Tensor: torch.add, aten.sub_.Tensor: torch.sub,
                         aten.mul_.Tensor: torch.mul, aten.hardtanh_.default: torch.nn.functional.hardtanh,
                         aten.silu_.default: torch.nn.functional.silu,
                         aten.sigmoid_.default: torch.sigmoid}

    def value(self, arg: Any) -> Any:
        """An argument in the new graph: a node's value, a stored tensor as a ``get_attr``."""
        return self.torch.fx.node.map_arg(arg, self.lookup)

    def lookup(self, item: Any) -> Any:
        """One program node's counterpart in the new graph."""
        if item in self.int8:
            raise _refuse(item, "decodes an int8 weight read by something other than a Linear/Conv")
        if item in self.keys:
            key = self.keys[item]
            if key not in self.emitted:
                install(self.root, key, _stored(self.gm, key), self.nn)
                self.emitted[key] = self.graph.get_attr(key)
            return self.emitted[key]
        return self.env[item]

    def module_call(self, node: Any, make: ModuleMaker) -> Any:
        """An ATen call with parameters as the ``nn`` module ``make`` builds, at their owner."""
        args = list(node.args)
        if len(args) > 1 and args[1] in self.weight_norms:
            return self.weight_norm_call(node, make)
        if len(args) > 1 and args[1] in self.int8:
            return self.int8_call(node)
        tensors = [self.keys.get(a) if hasattr(a, "op") else None for a in args[1:]]
        stored = [_stored(self.gm, k) if k else a for k, a in zip(tensors, args[1:])]
        if any(hasattr(a, "op") and a not in self.keys for a in args[1:]):
            raise _refuse(node, "takes a computed tensor as a parameter")
        meta = node.args[0].meta.get("val") if hasattr(node.args[0], "meta") else None
        rank = meta.dim() if meta is not None else 0
        try:
            module, params = make(self.nn, [args[0], *stored], rank)
        except (ValueError, TypeError) as exc:
            raise _refuse(node, f"has settings weightio cannot map ({exc})") from None
        dtypes = {t.dtype for t in params.values() if t is not None}
        if len(dtypes) == 1:  # a float64 program keeps its float64 parameters
            module = module.to(dtypes.pop())
        path = self._owner(node, [k for k in tensors if k], params)
        self._load(module, node, path, params)
        try:
            install(self.root, path, module, self.nn)
        except ValueError:
            raise _refuse(node, f"reuses module {path!r}, whose parameters another call "
                          "reads (shared weights)") from None
        return self.graph.call_module(path, (self.value(args[0]),))

    def weight_norm(self, node: Any) -> None:
        """``aten._weight_norm(v, g, dim)`` of torch's ``parametrizations.weight_norm``: kept
        for the Linear/Conv call reading it (``weight_norm_call``); nothing to compute here.
        """
        v, g = node.args[0], node.args[1]
        dim = int(_arg(list(node.args), 2, 0))
        suffix = ".parametrizations.weight.original"
        v_key, g_key = self.keys.get(v, ""), self.keys.get(g, "")
        owner = v_key[: -len(suffix + "1")]
        if not (v_key.endswith(suffix + "1") and g_key == f"{owner}{suffix}0" and owner):
            raise _refuse(node, "computes a weight norm of tensors that are not one module's "
                          "parametrizations.weight.original0/1")
        if any(user.target not in self.module_ops for user in node.users):
            raise _refuse(node, "computes a weight norm read by something other than a Linear/Conv")
        self.weight_norms[node] = (owner, _stored(self.gm, v_key), _stored(self.gm, g_key), dim)

    def weight_norm_call(self, node: Any, make: ModuleMaker) -> Any:
        """A Linear/Conv whose weight is a weight norm: the ``nn`` module under torch's
        ``parametrizations.weight_norm`` again, at the parametrization's owner, so the module
        reader reads it in weight-norm form (``read/base.py``, ``module_weight``).
        """
        args = list(node.args)
        owner, v, g, dim = self.weight_norms[args[1]]
        rest = args[2:]
        if any(hasattr(a, "op") and a not in self.keys for a in rest):
            raise _refuse(node, "takes a computed tensor as a parameter")
        if any(self.keys[a].rpartition(".")[0] != owner for a in rest if hasattr(a, "op")):
            raise _refuse(node, f"reads parameters of a module other than {owner!r}")
        stored = [v, *[_stored(self.gm, self.keys[a]) if hasattr(a, "op") else a for a in rest]]
        meta = args[0].meta.get("val") if hasattr(args[0], "meta") else None
        try:
            module, params = make(self.nn, [args[0], *stored], meta.dim() if meta is not None else 0)
        except (ValueError, TypeError) as exc:
            raise _refuse(node, f"has settings weightio cannot map ({exc})") from None
        module = module.to(v.dtype)
        self._load(module, node, owner, params)
        module = self.nn.utils.parametrizations.weight_norm(module, dim=None if dim == -1 else dim)
        with self.torch.no_grad():
            module.parametrizations.weight.original0.copy_(g)
            module.parametrizations.weight.original1.copy_(v)
        try:
            install(self.root, owner, module, self.nn)
        except ValueError:
            raise _refuse(node, f"reuses module {owner!r} (shared weights)") from None
        return self.graph.call_module(owner, (self.value(args[0]),))

    def int8_owner(self, node: Any) -> str | None:
        """The module path whose ``weight_int8`` / ``scale`` / ``zero_point`` buffers ``node``
        decodes (a ``QuantizedLinear``/``QuantizedConv`` written with ``keep_int8``), or None.
        """
        if node.target not in self.int8_ops:
            return None
        owners = set()
        for arg in node.all_input_nodes:
            if arg in self.int8:
                owners.add(self.int8[arg])
                continue
            owner, _, name = self.keys.get(arg, "").rpartition(".")
            if name not in ("weight_int8", "scale", "zero_point") or not owner:
                return None
            try:
                _stored(self.gm, f"{owner}.weight_int8")
            except AttributeError:
                return None
            owners.add(owner)
        return owners.pop() if len(owners) == 1 else None

    def int8_call(self, node: Any) -> Any:
        """A Linear/Conv whose weight the program decodes from int8 buffers: weightio's
        ``QuantizedLinear``/``QuantizedConv`` again, at their owner, after checking that the
        program's decoding equals the module's (docs/format.md's rule) bit for bit.
        """
        from weightio.frameworks.torch.write.quantized import MODULES

        args = list(node.args)
        owner = self.int8[args[1]]
        q = _stored(self.gm, f"{owner}.weight_int8")
        scale = _stored(self.gm, f"{owner}.scale")
        try:
            zero = _stored(self.gm, f"{owner}.zero_point")
        except AttributeError:
            zero = None
        decoded = self.evaluate(args[1])
        axis = None if scale.dim() == 0 else next(
            (a for a in range(q.dim()) if q.shape[a] == scale.numel() and scale.numel() > 1), 0)
        bias = _arg(args, 2, None)
        if bias is not None and (bias not in self.keys or self.keys[bias] != f"{owner}.bias"):
            raise _refuse(node, f"adds a bias that is not {owner!r}'s own")
        bias_value = None if bias is None else self.nn.Parameter(_stored(self.gm, self.keys[bias]).detach().clone())
        common = (q.detach().clone(), scale.detach().clone(), None if zero is None else zero.detach().clone(),
                  axis, decoded.dtype, bias_value)
        if node.target is self.torch.ops.aten.linear.default:
            module = MODULES.get("QuantizedLinear")(*common)
        else:
            rank = q.dim() - 2
            module = MODULES.get("QuantizedConv")(
                *common, stride=_ints(_arg(args, 3, [1]), rank, 1),
                padding=_ints(_arg(args, 4, [0]), rank, 0) if not isinstance(_arg(args, 4, 0), str) else None,
                dilation=_ints(_arg(args, 5, [1]), rank, 1), groups=int(_arg(args, 6, 1)),
            )
            if module.padding is None:
                raise _refuse(node, "pads by name ('same'), which weightio's QuantizedConv does not")
        with self.torch.no_grad():
            if not self.torch.equal(module.dequantized_weight(), decoded):
                raise _refuse(node, "decodes its int8 weight otherwise than docs/format.md's rule")
        try:
            install(self.root, owner, module, self.nn)
        except ValueError:
            raise _refuse(node, f"reuses module {owner!r} (shared weights)") from None
        return self.graph.call_module(owner, (self.value(args[0]),))

    def evaluate(self, node: Any) -> Any:
        """The value of a decoding node, computed from the stored buffers as the program does."""
        if node in self.keys:
            return _stored(self.gm, self.keys[node])
        args = self.torch.fx.node.map_arg(node.args, self.evaluate)
        kwargs = self.torch.fx.node.map_arg(node.kwargs, self.evaluate)
        with self.torch.no_grad():
            return node.target(*args, **kwargs)

    def embedding(self, node: Any) -> Any:
        """``aten.embedding(weight, indices, padding_idx)``: the table comes first."""
        weight_node, indices = node.args[0], node.args[1]
        if weight_node not in self.keys:
            raise _refuse(node, "looks up a computed table")
        weight = _stored(self.gm, self.keys[weight_node])
        padding = int(_arg(list(node.args), 2, -1))
        module = self.nn.Embedding(weight.shape[0], weight.shape[1],
                                   padding_idx=None if padding < 0 else padding).to(weight.dtype)
        params = {"weight": weight}
        path = self._owner(node, [self.keys[weight_node]], params)
        self._load(module, node, path, params)
        install(self.root, path, module, self.nn)
        return self.graph.call_module(path, (self.value(indices),))

    def select(self, node: Any) -> Any:
        """``x.select(dim, i)`` (BERT's pooler reads ``x[:, 0]``) as the slice ``i:i+1`` on the
        second-last axis, flattened away: the slice and flatten layers the reader knows.
        """
        data, dim, index = node.args[0], int(node.args[1]), int(node.args[2])
        meta = data.meta.get("val") if hasattr(data, "meta") else None
        rank = meta.dim() if meta is not None else 0
        if dim < 0:
            dim += rank
        if rank < 3 or dim != rank - 2 or index < 0:
            raise _refuse(node, "selects on an axis other than the second-last (x[:, 0] of a "
                          "sequence), or from the end")
        cut = (slice(None),) * dim + (slice(index, index + 1),)
        piece = self.graph.call_function(operator.getitem, (self.value(data), cut))
        return self.graph.call_function(self.torch.flatten, (piece, dim))

    def _owner(self, node: Any, keys: list[str], params: dict[str, Any]) -> str:
        """The module path of the call: the common owner of its parameters' keys."""
        if not keys:  # a pooling: no state, named after its node (unique among them)
            return node.name if not hasattr(self.root, node.name) else f"{node.name}_"
        owners = {key.rpartition(".")[0] for key in keys}
        names = {key.rpartition(".")[2] for key in keys}
        if len(owners) != 1 or not names <= set(params) or "" in owners:
            raise _refuse(node, f"reads parameters {sorted(keys)} that are not one module's "
                          f"{'/'.join(p for p in params if params[p] is not None)}")
        return owners.pop()

    def _load(self, module: Any, node: Any, path: str, params: dict[str, Any]) -> None:
        with self.torch.no_grad():
            for name, tensor in params.items():
                if tensor is None:
                    continue
                target = getattr(module, name)
                if tuple(target.shape) != tuple(tensor.shape):
                    raise _refuse(node, f"has {name} of shape {tuple(tensor.shape)}, not "
                                  f"{tuple(target.shape)}")
                target.copy_(tensor)
            tracked = f"{path}.num_batches_tracked"
            if hasattr(module, "num_batches_tracked"):
                try:
                    module.num_batches_tracked.copy_(_stored(self.gm, tracked))
                except AttributeError:
                    pass

    def run(self) -> Any:
        """The module-level GraphModule of the whole program."""
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = self.graph.placeholder(node.target)
            elif node.op == "get_attr":
                self.keys[node] = str(node.target)
            elif node.op == "call_module":
                if node.target != "_guards_fn":
                    raise _refuse(node, "calls a submodule of the program")
            elif node.op == "call_function":
                self.env[node] = self.call(node)
            elif node.op == "output":
                value = node.args[0]
                if isinstance(value, (tuple, list)) and len(value) == 1:
                    value = value[0]
                self.graph.output(self.value(value))
        return self.torch.fx.GraphModule(self.root, self.graph, "ExportedProgram")

    def call(self, node: Any) -> Any:
        """One ATen call in the new graph (None: nothing to compute, such as a metadata check)."""
        target = node.target
        owner = self.int8_owner(node)
        if owner is not None:
            self.int8[node] = owner  # computed with the Linear/Conv reading it (``int8_call``)
            return None
        if target in self.identities:
            return self.value(node.args[0])
        if target is self.torch.ops.aten.dropout.default:
            if len(node.args) > 2 and node.args[2]:
                raise _refuse(node, "is dropout with train=True, which applies even in eval mode")
            return self.value(node.args[0])
        if target in self.checks:
            return None  # a check of the traced input's metadata, true for the traced size
        if target is self.torch.ops.aten.select.int:
            return self.select(node)
        if target is self.torch.ops.aten.sym_size.int:  # x.size(dim), as the reader knows it
            return self.graph.call_method("size", self.value(node.args))
        if target is self.torch.ops.aten.embedding.default:
            return self.embedding(node)
        if target is self.torch.ops.aten._weight_norm.default:
            return self.weight_norm(node)
        make = self.module_ops.get(target)
        if make is not None:
            return self.module_call(node, make)
        function = self.function_ops.get(target)
        if function is None and target in self.in_place:
            function = self._in_place(node)
        if function is None:
            if any(str(self.keys.get(a, "")).endswith(".weight_int8") for a in node.args):
                raise _refuse(node, "decodes an int8 weight with operations other than those of "
                              "weightio's QuantizedLinear/QuantizedConv (convert --keep-int8); "
                              "read the quantised .safetensors archive it was written from")
            raise _refuse(node, "has no reader")
        made = self.graph.create_node("call_function", function, self.value(node.args),
                                      self.value(node.kwargs), name=self.name_hint(node))
        source = self.source_key(node)
        if source is not None:
            made.meta[SOURCE_KEY] = source
        return made

    def source_key(self, node: Any) -> str | None:
        """The registry key of the source call (None: the rebuilt function's own)."""
        return None

    def _in_place(self, node: Any) -> Any:
        """``out += identity`` (resnet's residual, ``aten.add_``) as ``torch.add``: the same
        value, where nothing reads the overwritten input after the update.
        """
        if not hasattr(self, "_order"):
            self._order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        order, data = self._order, node.args[0]
        if hasattr(data, "users") and any(order[u] > order[node] for u in data.users if u is not node):
            raise _refuse(node, f"updates {data.name} in place, which later nodes read")
        return self.in_place[node.target]

    def name_hint(self, node: Any) -> str | None:
        """The name of the rebuilt call (None: torch.fx's default, after its target)."""
        return None


def program_module(program: Any) -> Any:
    """The ``nn`` module graph a program computes, with its parameters at their keys.

    Raises:
        UnsupportedLayerError: an operation without a mapping, named by node.
    """
    torch = torch_module("reading torch.export programs")
    return Rebuild(torch, program.module(check_guards=False)).run()


def example_inputs(program: Any) -> tuple[Any, ...]:
    """The positional sample inputs the program was exported with."""
    args, kwargs = program.example_inputs or ((), {})
    if kwargs:
        raise TraceError("the program takes keyword inputs; weightio reads positional ones")
    return tuple(args)


def read_program(program: Any, *, source_file: Any = None) -> Archive:
    """An archive of an ``ExportedProgram``; tensor keys are the program's state-dict keys."""
    module = program_module(program)
    examples = example_inputs(program)
    try:
        archive = read_torch_module(module, example_input=examples or None, source_file=source_file,
                                    tracer="torch.export (a saved program)")
    except ValidationError as exc:  # settings the spec refuses (a batch norm with eps=0)
        error = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in error.get("loc", ()))
        raise UnsupportedLayerError(
            f"the program has a layer setting the spec refuses ({where}: {error.get('msg')}, "
            f"received {error.get('input')!r})"
        ) from None
    spec = archive.spec
    provenance = spec.provenance.model_copy(update={"source_class": PROGRAM_CLASS})
    return Archive(spec.model_copy(update={"provenance": provenance}), archive.stored)


def run_program(program: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run the program itself (its own module, not weightio's rebuild) on numpy inputs.

    Its shape checks are off (no guard function, and ``forward`` called without the module's
    pre-hook checking input shapes): a program exported at one batch size computes the same
    per-sample function at another, which the proof's probes use.
    """
    torch = torch_module("running torch.export programs")
    module = program.module(check_guards=False)
    with torch.no_grad():
        result = module.forward(*[numpy_to_tensor(np.ascontiguousarray(x)) for x in inputs])
    items = result if isinstance(result, (tuple, list)) else [result]
    return [tensor_to_numpy(out, key=f"output {i}", copy=True) for i, out in enumerate(items)]
