"""Build a runnable ``torch.nn.Module`` from an archive, and run torch modules on numpy arrays.

A chain becomes an ``nn.Sequential`` (what a user would have written); any other graph becomes a
``torch.fx.GraphModule`` built node by node. Each spec kind has one writer in ``TORCH_WRITE``
returning the module(s) computing it; every activation parameter is passed explicitly, so torch's
defaults never decide a number. Weights are copied bit-exact in their own dtype.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from weightio.adapters.torch_common import (
    numpy_to_tensor,
    tensor_to_numpy,
    torch_dtype_for,
    torch_module,
)
from weightio.archive import Archive
from weightio.errors import UnsupportedLayerError, WeightsOnlyArchiveError
from weightio.registry import Registry
from weightio.spec import ActivationFn, LayerBase, ModelSpec

#: A writer: ``(layer, archive) -> modules`` computing the layer, applied in order.
WriteFn = Callable[[Any, Archive], list[Any]]

TORCH_WRITE: Registry[WriteFn] = Registry("torch", "write")


def activation_module(fn: ActivationFn, *, layer: str) -> Any:
    """The torch module computing ``fn``, with every parameter set explicitly."""
    nn = torch_module("building PyTorch modules").nn
    makers: dict[str, Callable[[], Any]] = {
        "linear": nn.Identity,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope=fn.negative_slope),
        "elu": lambda: nn.ELU(alpha=fn.alpha),
        "celu": lambda: nn.CELU(alpha=fn.alpha),
        "selu": nn.SELU,
        "gelu": lambda: nn.GELU(approximate="tanh" if fn.approximate else "none"),
        "sigmoid": nn.Sigmoid,
        "log_sigmoid": nn.LogSigmoid,
        "hard_sigmoid": nn.Hardsigmoid,
        "tanh": nn.Tanh,
        "hard_tanh": lambda: nn.Hardtanh(min_val=-1.0, max_val=1.0),
        "softmax": lambda: nn.Softmax(dim=fn.axis),
        "log_softmax": lambda: nn.LogSoftmax(dim=fn.axis),
        "softplus": lambda: nn.Softplus(beta=1.0, threshold=20.0),
        "softsign": nn.Softsign,
        "silu": nn.SiLU,
        "hard_silu": nn.Hardswish,
        "mish": nn.Mish,
        "tanh_shrink": nn.Tanhshrink,
        "soft_shrink": lambda: nn.Softshrink(lambd=fn.threshold),
        "hard_shrink": lambda: nn.Hardshrink(lambd=fn.threshold),
    }
    maker = makers.get(fn.name)
    if maker is None:
        raise UnsupportedLayerError(
            f"activation {fn.describe()} has no PyTorch module mapping", layer=layer
        )
    return maker()


def _parameter(array: np.ndarray) -> Any:
    torch = torch_module("building PyTorch modules")
    tensor = numpy_to_tensor(array)
    return torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point())


@TORCH_WRITE.register("dense")
def _dense(layer: Any, archive: Archive) -> list[Any]:
    torch = torch_module("building PyTorch modules")
    weight = archive.tensor(layer.name, "weight")
    # Built on the meta device: no random init to throw away, and any float dtype works.
    linear = torch.nn.Linear(
        layer.in_features, layer.units, bias=layer.use_bias, device="meta",
        dtype=torch_dtype_for(weight.dtype),
    )
    linear.weight = _parameter(weight)
    if layer.use_bias:
        linear.bias = _parameter(archive.tensor(layer.name, "bias"))
    modules = [linear]
    if layer.activation.name != "linear":
        modules.append(activation_module(layer.activation, layer=layer.name))
    return modules


@TORCH_WRITE.register("activation")
def _activation(layer: Any, archive: Archive) -> list[Any]:
    return [activation_module(layer.activation, layer=layer.name)]


@TORCH_WRITE.register("dropout")
def _dropout(layer: Any, archive: Archive) -> list[Any]:
    return [torch_module("building PyTorch modules").nn.Dropout(p=layer.rate)]


@TORCH_WRITE.register("identity")
def _identity(layer: Any, archive: Archive) -> list[Any]:
    return [torch_module("building PyTorch modules").nn.Identity()]


@TORCH_WRITE.register("affine")
def _affine(layer: Any, archive: Archive) -> list[Any]:
    """Weightio's ``Affine`` module: ``x * scale + offset``, exact in train and eval mode."""
    from weightio.adapters.torch_modules import Affine

    scale = numpy_to_tensor(np.array(archive.tensor(layer.name, "scale")))
    offset = numpy_to_tensor(np.array(archive.tensor(layer.name, "offset")))
    return [Affine(scale, offset)]


@TORCH_WRITE.register("binary_proba")
def _binary_proba(layer: Any, archive: Archive) -> list[Any]:
    """``[1 - p, p]`` as a frozen ``nn.Linear(1, 2)``: weight ``[[-1], [1]]``, bias ``[1, 0]``.

    With one input feature each output is one exact product (by +-1) plus the bias: exactly
    ``1 - p`` and ``p``. The parameters are frozen so fine-tuning cannot change the meaning.
    """
    torch = torch_module("building PyTorch modules")
    dtype = _flowing_float_dtype(archive, layer.name)
    linear = torch.nn.Linear(1, 2, bias=True, device="meta", dtype=dtype)
    linear.weight = torch.nn.Parameter(
        torch.tensor([[-1.0], [1.0]], dtype=dtype), requires_grad=False
    )
    linear.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=dtype), requires_grad=False)
    return [linear]


def _flowing_float_dtype(archive: Archive, layer_name: str) -> Any:
    """The float dtype reaching ``layer_name``: that of the nearest parameter before it."""
    torch = torch_module("building PyTorch modules")
    dtype = None
    for layer in archive.spec.layers:
        if layer.name == layer_name:
            break
        for ref in layer.tensor_refs().values():
            if ref.dtype in ("F16", "BF16", "F32", "F64"):
                dtype = ref.dtype
    if dtype is None:
        dtype = next((i.dtype for i in archive.spec.inputs if i.dtype.startswith(("F", "BF"))), "F32")
    return {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}[
        dtype
    ]


@TORCH_WRITE.register("opaque")
def _opaque(layer: Any, archive: Archive) -> list[Any]:
    why = f"; {layer.reason}" if layer.reason else ""
    raise UnsupportedLayerError(
        f"is kept as opaque ({layer.source_class or 'unknown source class'}{why}): weightio does "
        "not know what it computes, so it cannot build it. The archive can still be inspected and "
        "diffed; to run it, build the model in PyTorch and use load_into_torch()",
        layer=layer.name,
    )


class _ModuleNames:
    """Turns spec layer names into unique torch submodule names (no dots allowed there)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, wanted: str) -> str:
        base = re.sub(r"\W", "_", wanted.replace(".", "_")) or "layer"
        name, n = base, 1
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        return name


def _layer_modules(
    layer: LayerBase, archive: Archive, namer: _ModuleNames
) -> list[tuple[str, Any]]:
    """The (name, module) pairs computing ``layer``; a fused activation follows its dense."""
    modules = TORCH_WRITE.lookup(layer.kind, layer=layer.name)(layer, archive)
    # The first plain module carries the layer's name; helpers a writer adds around it come as
    # (suffix, module) pairs; further plain modules are the layer's activation.
    named, main = [], False
    for item in modules:
        if isinstance(item, tuple):
            named.append((namer.take(f"{layer.name}_{item[0]}"), item[1]))
        elif not main:
            named.append((namer.take(layer.name), item))
            main = True
        else:
            named.append((namer.take(f"{layer.name}_activation"), item))
    return named


def _graph_module(archive: Archive) -> Any:
    """Build a ``GraphModule`` for a spec that is not a plain chain."""
    fx = torch_module("building PyTorch modules").fx
    spec: ModelSpec = archive.spec
    graph, namer, submodules = fx.Graph(), _ModuleNames(), {}
    values: dict[str, Any] = {}
    for inp in spec.inputs:
        values[inp.name] = graph.placeholder(re.sub(r"\W", "_", inp.name))
    for index in spec.topological_order():
        layer = spec.layers[index]
        sources = spec.layer_inputs(index)
        if layer.kind in _torch_write_seq.GRAPH_KINDS:
            values[layer.name] = _torch_write_seq.graph_value(
                layer, archive, graph, [values[s] for s in sources],
                lambda wanted, module: _add(submodules, namer.take(wanted), module),
            )
            continue
        named = _layer_modules(layer, archive, namer)
        if len(sources) != 1:
            raise UnsupportedLayerError(
                f"reads {len(sources)} inputs ({', '.join(sources)}); a {layer.kind} layer "
                "reads exactly one",
                layer=layer.name,
            )
        value = values[sources[0]]
        for name, module in named:
            submodules[name] = module
            value = graph.call_module(name, (value,))
        values[layer.name] = value
    results = [values[out.layer] for out in spec.outputs]
    graph.output(results[0] if len(results) == 1 else tuple(results))
    return fx.GraphModule(submodules, graph, class_name=_class_name(spec.name))


def _add(submodules: dict[str, Any], name: str, module: Any) -> str:
    submodules[name] = module
    return name


def _class_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned.isidentifier() else f"Model_{cleaned}"


def to_torch(archive: Archive) -> Any:
    """Build the ``torch.nn.Module`` an archive describes, in eval mode, weights bit-exact.

    Returns:
        An ``nn.Sequential`` for a chain, else a ``torch.fx.GraphModule`` (one output, or a
        tuple of outputs in spec order).

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture (a bare state dict).
        UnsupportedLayerError: a layer with no PyTorch mapping (e.g. opaque), by name.
    """
    torch = torch_module("to_torch")
    spec = archive.spec
    if not spec.weights_only:
        from weightio.adapters import torch_write_conv

        archive = torch_write_conv.prepare(archive)
        spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (read from a bare state dict), so there is no "
            "architecture to build; build the model in PyTorch and copy the weights in with "
            "load_into_torch(archive, module)",
            file=archive.path,
        )
    if spec.is_chain and not _torch_write_seq.needs_graph(spec):
        namer = _ModuleNames()
        pairs = [pair for layer in spec.layers for pair in _layer_modules(layer, archive, namer)]
        module = torch.nn.Sequential(OrderedDict(pairs))
    else:
        module = _graph_module(archive)
    return module.eval()


def _to_tensor(array: Any) -> Any:
    torch = torch_module("run_torch")
    return array if isinstance(array, torch.Tensor) else numpy_to_tensor(np.asarray(array))


def _flatten_outputs(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [item for v in value for item in _flatten_outputs(v)]
    return [value]


def run_torch(module: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``module`` in eval mode without gradients on numpy inputs; one array per output.

    The module's train/eval flags are restored afterwards.
    """
    torch = torch_module("run_torch")
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            result = module(*[_to_tensor(a) for a in inputs])
    finally:
        for m, flag in flags:
            m.training = flag
    return [
        tensor_to_numpy(out, key=f"output {i}", copy=False)
        for i, out in enumerate(_flatten_outputs(result))
    ]


# Family modules register into TORCH_WRITE (kept last: they import this module's helpers).
# Family modules register their writers into TORCH_WRITE; imported once it exists.
from weightio.adapters import torch_write_conv  # noqa: E402,F401
from weightio.adapters import torch_write_seq as _torch_write_seq  # noqa: E402
