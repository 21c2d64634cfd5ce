"""Read a live ``torch.nn.Module`` into an archive from its module-level graph.

The graph is the export path's rebuild of the module's ``torch.export`` program
(``export.read_module``, the first choice) or, where export cannot go, a ``torch.fx`` trace
(``read_torch_module`` traces when it is not given the graph).

Tracing turns any module (``nn.Sequential`` or a custom ``forward``) into a graph of module
calls, function calls and tensor-method calls; each node is then mapped by one reader from
``torch_read_ops.TORCH_READ``. A node without a reader is refused by name rather than guessed at,
except ``torch.nn`` leaf modules, which are kept as ``opaque`` with their tensors so the archive
still archives, inspects and diffs. The module is traced and probed in eval mode (what inference
computes) and its train/eval flags are restored afterwards.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from typing import Any

from weightio.errors import SpecValidationError, TraceError, UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.format.provenance import provenance
from weightio.frameworks.torch.common import qualified_name, torch_dtype_name, torch_module
from weightio.frameworks.torch.read.attention import (
    FUNCTION_REFUSALS,
    MULTI_ARGUMENT_MODULES,
    TRACED_FORWARDS,
    fold_sequence_first,
)
from weightio.frameworks.torch.read.base import (
    PARAMETER_KEYS,
    TORCH_READ,
    ReadContext,
    StoredTensor,
    bind_arguments,
)
from weightio.frameworks.torch.read.conv import SHAPE_CHANGING
from weightio.frameworks.torch.read.cropped import fold_cropped_pools
from weightio.frameworks.torch.read.static import fold_static, is_batch, static_nodes
from weightio.frameworks.torch.read.tuples import MULTI_TENSOR_KEYS, resolve_tuples
from weightio.layouts.flow import mark_channel_inputs
from weightio.spec.base import LayerBase
from weightio.spec.core import OpaqueLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec

_FUNCTION_KEYS: dict[Any, str] | None = None
#: A node's meta entry naming the source call it was rebuilt from (the export path's ATen
#: call ``aten.sigmoid`` of a source ``x.sigmoid()`` records ``method:sigmoid``): the layer's
#: ``source_class``, as torch.fx would have recorded it.
SOURCE_KEY = "weightio_source_key"
#: Weightio's own module for ``affine`` (its input shape is its ``features``).
AFFINE_MODULE = "weightio.frameworks.torch.write.core.Affine"


def _function_keys() -> dict[Any, str]:
    """Map each supported function object to its registry key (built once, torch imported)."""
    global _FUNCTION_KEYS
    if _FUNCTION_KEYS is None:
        torch = torch_module("reading PyTorch modules")
        table: dict[Any, str] = {}
        for key in TORCH_READ.keys():
            if key.startswith("method:") or not key.startswith("torch."):
                continue
            obj: Any = torch
            for part in key.split(".")[1:]:
                obj = getattr(obj, part, None)
            if obj is not None and not isinstance(obj, type):
                table.setdefault(obj, key)
        _FUNCTION_KEYS = table
    return _FUNCTION_KEYS


def _function_name(target: Any) -> str:
    """A readable name for an unsupported function target (``torch.matmul``, ``operator.add``)."""
    module = getattr(target, "__module__", None) or "torch"
    return f"{module.replace('_operator', 'operator')}.{getattr(target, '__name__', target)}"


def node_key(node: Any, root: Any) -> str:
    """The registry key of an fx node: module class, function name or ``method:<name>``."""
    if node.op == "call_module":
        return qualified_name(root.get_submodule(node.target))
    if node.op == "call_method":
        return f"method:{node.target}"
    return _function_keys().get(node.target) or _function_name(node.target)


class FxTraceError(TraceError):
    """torch.fx could not trace the module (data-dependent code in ``forward``): the one
    refusal the ``torch.export`` path (``read/export.py``) takes over.
    """


@contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def quiet() -> Iterator[None]:
    """Tracing is weightio's work, not the user's run: the warnings torch emits while tracing
    or exporting (deprecations inside torch.export, "tensor attributes assigned during
    export" from nn.LSTM) and what it prints to stderr would only be noise. A failure is still
    raised, and weightio's own error says what went wrong.
    """
    with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextmanager
def _traced_root(module: Any) -> Iterator[None]:
    """A root whose class has a traced forward runs it while fx traces (fx calls the class's
    ``forward``): its class is swapped for a subclass with that forward, then restored.
    """
    traced = TRACED_FORWARDS.get(qualified_name(module))
    if traced is None:
        yield
        return
    cls = type(module)

    def forward(self: Any, src: Any) -> Any:
        return traced(self, cls.__name__, src)

    module.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                   "__qualname__": cls.__qualname__})
    try:
        yield
    finally:
        module.__class__ = cls


def _trace(module: Any) -> Any:
    torch = torch_module("reading PyTorch modules")
    try:
        class _Tracer(torch.fx.Tracer):  # a module with a reader is a leaf, like torch.nn's
            def is_leaf_module(self, m: Any, qualname: str) -> bool:
                if qualified_name(m) in TRACED_FORWARDS:
                    return False
                return qualified_name(m) in TORCH_READ or super().is_leaf_module(m, qualname)

            def call_module(self, m: Any, forward: Any, args: Any, kwargs: Any) -> Any:
                traced = TRACED_FORWARDS.get(qualified_name(m))
                if traced is not None:
                    forward = functools.partial(traced, m, self.path_of_module(m))
                return super().call_module(m, forward, args, kwargs)

        tracer = _Tracer()
        with _traced_root(module):
            graph = tracer.trace(module)
        return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)
    except UnsupportedLayerError:
        raise  # a traced forward refusing what it cannot map (a mask), by name
    except Exception as exc:  # fx raises many types; each means "not traceable as written"
        raise FxTraceError(
            f"torch.fx could not trace {qualified_name(module)} ({type(exc).__name__}: {exc}). "
            "weightio reads modules whose forward is a fixed graph of module and function calls; "
            "remove data-dependent control flow from forward, or save the weights with "
            "torch.save(model.state_dict(), path) and read that file (weights only)"
        ) from None


def _is_supported(node: Any, root: Any) -> bool:
    if node.op == "call_module":
        return True  # a leaf module is at worst kept as opaque
    return node_key(node, root) in TORCH_READ


def _unsupported(node: Any, root: Any, op: str) -> UnsupportedLayerError:
    users = ", ".join(user.name for user in node.users) or "nothing"
    reason = FUNCTION_REFUSALS.get(getattr(node.target, "__name__", None)) if node.op == "call_function" else None
    if reason is not None:
        return UnsupportedLayerError(
            f"the operation {op} (fx node {node.name!r}, read by {users}) in {qualified_name(root)}: {reason}",
            layer=node.name,
        )
    return UnsupportedLayerError(
        f"the operation {op} (fx node {node.name!r}, read by {users}) in "
        f"{qualified_name(root)} is not supported yet; weightio reads the nn modules, "
        "functions and shape arithmetic docs/layers.md lists. Move it into a module weightio "
        "knows, or archive the weights only with weightio.read(module.state_dict())",
        layer=node.name,
    )


def _check_graph(gm: Any, root: Any) -> None:
    """Refuse what cannot be read before any shape inference, so the first error is the real one."""
    static = static_nodes(gm.graph)
    for node in gm.graph.nodes:
        if node in static:
            continue  # settled for the traced size by fold_static, after shape propagation
        if node.op == "get_attr":
            if not _reads_stored_tensor(node, root):
                raise _unsupported(node, root, f"reading the attribute self.{node.target}")
            continue
        if node.op in ("call_function", "call_method"):
            if not _is_supported(node, root):
                raise _unsupported(node, root, node_key(node, root))
            _check_call(node, root, node_key(node, root), static)
    # A module called twice is two layers: without tensors, simply two; with tensors, two layers
    # that reference the same ones (ReadContext.tensor stores each torch tensor once).


def _stored_tensor(node: Any, root: Any) -> StoredTensor | None:
    """The parameter or buffer a ``get_attr`` node reads, if it is one."""
    torch = torch_module("reading PyTorch modules")
    owner, _, name = str(node.target).rpartition(".")
    try:
        value = getattr(root.get_submodule(owner) if owner else root, name)
    except AttributeError:
        return None
    return StoredTensor(str(node.target), value) if isinstance(value, torch.Tensor) else None


def _reads_stored_tensor(node: Any, root: Any) -> bool:
    """A ``get_attr`` of a tensor read only by functions whose readers take one."""
    return _stored_tensor(node, root) is not None and all(
        user.op in ("call_function", "call_method") and node_key(user, root) in PARAMETER_KEYS
        for user in node.users
    )


def _as_tuple(example_input: Any) -> tuple[Any, ...]:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def _inferred_shape(placeholder: Any, root: Any) -> tuple[tuple[int, ...], Any] | None:
    """Follow the input through shape-keeping layers to the first nn.Linear: its input shape."""
    torch = torch_module("reading PyTorch modules")
    pending, seen = list(placeholder.users), set()
    while pending:
        node = pending.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if node.op != "output" and node_key(node, root) in SHAPE_CHANGING:
            return None  # a convolution, pooling or reshape: its input shape is not the Linear's
        if node.op == "call_module":
            sub = root.get_submodule(node.target)
            if isinstance(sub, torch.nn.Linear):
                return (int(sub.in_features),), sub.weight.dtype
            if qualified_name(sub) == AFFINE_MODULE:
                return (sub.features,), sub.scale.dtype
            if node_key(node, root) not in TORCH_READ:
                continue  # an opaque module may reshape: stop following this path
        elif node.op not in ("call_function", "call_method"):
            continue
        pending.extend(node.users)
    return None


def _example_inputs(placeholders: list[Any], root: Any, example_input: Any) -> tuple[Any, ...]:
    torch = torch_module("reading PyTorch modules")
    if example_input is not None:
        examples = _as_tuple(example_input)
        if len(examples) != len(placeholders) or not all(
            isinstance(t, torch.Tensor) for t in examples
        ):
            raise TraceError(
                f"{qualified_name(root)}.forward takes {len(placeholders)} tensor input(s) "
                f"({', '.join(p.target for p in placeholders)}); example_input= must be a tensor "
                f"or a tuple of that many tensors, each with a batch axis"
            )
        return examples
    examples = []
    for placeholder in placeholders:
        inferred = _inferred_shape(placeholder, root)
        if inferred is None:
            raise TraceError(
                f"cannot tell the shape of input {placeholder.target!r} of "
                f"{qualified_name(root)}: it does not feed an nn.Linear directly. Pass "
                "example_input= (a tensor with a batch axis, or a tuple of them)"
            )
        shape, dtype = inferred
        examples.append(torch.zeros((2, *shape), dtype=dtype))
    return tuple(examples)


def _propagate_shapes(gm: Any, root: Any, examples: tuple[Any, ...]) -> None:
    torch = torch_module("reading PyTorch modules")
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        # The probe is ours, not the user's run: its warnings would only be noise.
        # ShapeProp prints the failing node's traceback itself; the error below says it all.
        with torch.no_grad(), warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            ShapeProp(gm).propagate(*examples)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in examples)
        raise TraceError(
            f"running {qualified_name(root)} on example input(s) of shape {shapes} failed "
            f"({type(exc).__name__}: {exc}); pass example_input= with the shape and dtype the "
            "model expects"
        ) from None


def _rank(node: Any) -> int | None:
    shape = _shape(node)
    return None if shape is None else len(shape)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _json_value(value: Any) -> Any:
    """``value`` if it is plain JSON data (finite numbers only), else a ``_Skip``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _SKIP
    if isinstance(value, (tuple, list)):
        items = [_json_value(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    return _SKIP


_SKIP = object()


def _opaque(module: Any, ctx: ReadContext) -> LayerBase:
    """Keep an unknown leaf module's tensors under their state-dict names, and its settings."""
    config = {}
    for attr, value in vars(module).items():
        if attr.startswith("_") or attr == "training":
            continue
        plain = _json_value(value)
        if plain is not _SKIP:
            config[attr] = plain
    tensors = {}
    for param, value in module.state_dict(keep_vars=True).items():
        tensors[param] = ctx.tensor(param, value)
    reason = f"weightio has no mapping for {qualified_name(type(module))} yet"
    return OpaqueLayer(**ctx.base(), reason=reason, config=config, tensors=tensors)


class _Namer:
    """Gives each input and layer a unique spec name."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self.used:
            name, n = f"{wanted}_{n}", n + 1
        self.used.add(name)
        return name


def _call_parts(node: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Split a call into its data argument and the rest (fx may pass the data as ``input=``)."""
    args, kwargs = tuple(node.args), dict(node.kwargs)
    if args:
        return args[0], args[1:], kwargs
    for name in ("input", "self"):
        if name in kwargs:
            return kwargs.pop(name), (), kwargs
    return None, (), kwargs


def _nodes_in(value: Any) -> list[Any]:
    found: list[Any] = []
    torch_module("reading PyTorch modules").fx.node.map_arg(value, found.append)
    return found


def _check_call(node: Any, root: Any, key: str, static: set[Any]) -> None:
    """A function reads one tensor; every other argument must be a constant (or a shape the
    traced size settles).
    """
    data, args, kwargs = _call_parts(node)
    if not _nodes_in(data):
        raise _unsupported(node, root, f"{key} without an input tensor")
    tensors = [dep for dep in _nodes_in((args, kwargs)) if dep not in static and dep.op != "get_attr"]
    if tensors and key not in MULTI_TENSOR_KEYS:
        raise _unsupported(node, root, f"{key} with a tensor-valued parameter")


def _sources(node: Any, names: dict[Any, str], root: Any) -> list[str]:
    """Names of the inputs and layers feeding ``node``."""
    feeding = [dep for dep in _nodes_in((node.args, node.kwargs)) if dep.op != "get_attr"]
    if not feeding:  # self.class_token.expand(x.shape[0], ...): the batch comes from x
        found: list[Any] = []
        torch_module("reading PyTorch modules").fx.node.map_aggregate(
            (node.args, node.kwargs), lambda v: found.append(v.source) if is_batch(v) and v.source else v
        )
        feeding = found[:1]
    for dep in feeding:
        if dep not in names:
            raise _unsupported(dep, root, f"the value of {dep.op} {dep.target}")
    return [names[dep] for dep in feeding]


def _first_rank(data: Any) -> int | None:
    """The rank of the first tensor of a list argument (``torch.cat([a, b], dim)``)."""
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "meta"):
        return _rank(data[0])
    return None


def _with_stored_tensors(parts: Any, root: Any) -> Any:
    """The call's arguments with each ``get_attr`` node replaced by the tensor it reads."""
    fx = torch_module("reading PyTorch modules").fx

    def swap(value: Any) -> Any:
        if hasattr(value, "op") and value.op == "get_attr":
            return _stored_tensor(value, root)
        return value

    return fx.node.map_aggregate(parts, swap)


def _read_node(
    node: Any, root: Any, names: dict[Any, str], namer: _Namer, arrays: dict, shared: ReadContext
) -> Any:
    key = node_key(node, root)
    is_module = node.op == "call_module"
    data, args, kwargs = _with_stored_tensors(_call_parts(node), root)
    ctx = ReadContext(
        layer_name=namer.take(node.target if is_module else node.name),
        inputs=_sources(node, names, root),
        source=node.meta.get(SOURCE_KEY) or key,
        input_rank=_rank(data) if hasattr(data, "meta") else _first_rank(data),
        module_path=node.target if is_module else None,
        arrays=arrays,
        input_shape=_shape(data) if hasattr(data, "meta") else None,
        data=data,
        stored=shared.stored,
        tied=shared.tied,
        fresh=namer.take,
        node_meta=node.meta,
    )
    if is_module:
        module = root.get_submodule(node.target)
        reader = TORCH_READ.get(key)
        if reader is None:
            return _opaque(module, ctx)
        check = MULTI_ARGUMENT_MODULES.get(key)
        if check is not None and check(node) is not None:
            raise _unsupported(node, root, f"{key} {check(node)}")
        if check is None and (len(node.args) != 1 or node.kwargs):
            raise _unsupported(node, root, f"{key} called with more than one argument")
        return _validated(key, ctx, lambda: reader(module, ctx))
    bound = bind_arguments(key, args, kwargs, ctx.layer_name)
    return _validated(key, ctx, lambda: TORCH_READ.lookup(key, layer=ctx.layer_name)(bound, ctx))


def _validated(key: str, ctx: ReadContext, read: Any) -> Any:
    """Run a reader; settings the spec cannot hold (a pydantic refusal) are a typed error naming
    the layer, never pydantic's own.
    """
    from pydantic import ValidationError

    try:
        return read()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "a setting"
        raise SpecValidationError(
            f"{key}'s {where} does not fit weightio's layer spec ({first['msg']})",
            layer=ctx.layer_name,
        ) from None


def _outputs(node: Any, names: dict[Any, str], root: Any) -> list[OutputSpec]:
    value = node.args[0]
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    outputs = []
    for index, item in enumerate(items):
        if item not in names:
            raise UnsupportedLayerError(
                f"{qualified_name(root)}.forward returns {type(item).__name__} at position "
                f"{index}; weightio reads models returning a tensor or a tuple of tensors",
                layer="output",
            )
        name = "output" if len(items) == 1 else f"output_{index}"
        outputs.append(OutputSpec(name=name, layer=names[item]))
    return outputs


def _unchain(layers: list[Any], inputs: list[InputSpec], outputs: list[OutputSpec]) -> list[Any]:
    """Drop the wiring when one input flows through every layer in order to the one output."""
    if len(inputs) != 1 or len(outputs) != 1 or not layers:
        return layers
    previous = inputs[0].name
    for layer in layers:
        if layer.inputs != [previous]:
            return layers
        previous = layer.name
    if outputs[0].layer != previous:
        return layers
    return [layer.model_copy(update={"inputs": None}) for layer in layers]


def _unused_keys(module: Any, arrays: dict) -> list[str]:
    return [key for key in module.state_dict() if key not in arrays]


def inferred_examples(module: Any, example_input: Any = None) -> tuple[Any, ...]:
    """The example inputs to trace ``module`` at: ``example_input=`` as a tuple, or zeros of the
    shape an input's first ``nn.Linear`` takes (found by an fx trace, which export cannot do
    without an input).

    Raises:
        TraceError: no example and no shape to infer (FxTraceError: fx cannot trace it either).
    """
    torch = torch_module("reading PyTorch modules")
    if example_input is not None:
        examples = _as_tuple(example_input)
        if not all(isinstance(t, torch.Tensor) for t in examples):
            raise TraceError("example_input= must be a tensor or a tuple of tensors")
        return examples
    with eval_mode(module):
        gm = _trace(module)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        return _example_inputs(placeholders, module, None)


def tracer_record(tracer: str, examples: tuple[Any, ...], settled: bool) -> list[str]:
    """The provenance lines of a traced read: which tracer, and, when shape arithmetic (sizes,
    literal view sizes) was settled for the traced size, that size.
    """
    lines = [f"traced with {tracer}"]
    if settled:
        shapes = ", ".join(str(list(t.shape)) for t in examples)
        lines.append(f"shape arithmetic settled for the traced input shape(s) {shapes} "
                     "(the batch axis kept free)")
    return lines


def read_torch_module(
    module: Any, *, example_input: Any = None, source_file: Any = None,
    tracer: str = "torch.fx", graph_module: Any = None,
) -> Archive:
    """Read a live ``nn.Module`` into an archive whose tensor keys are its state-dict keys.

    Args:
        module: Any traceable ``torch.nn.Module``.
        example_input: A batch tensor (or tuple of them) the model accepts. Needed when an input
            does not feed an ``nn.Linear``, whose ``in_features`` otherwise gives its shape.
        source_file: The file the module was loaded from, recorded in provenance.
        tracer: The tracer provenance names (``read_exported`` passes ``torch.export``, whose
            rebuilt module this reads).
        graph_module: The module-level graph of ``module`` already built (the export path's
            rebuild, whose node names follow the source's calls), read instead of an fx trace.

    Raises:
        TraceError: the module cannot be traced or probed.
        UnsupportedLayerError: an operation or setting with no exact spec equivalent.
        UnsupportedTensorError: a quantized, sparse, meta or subclass tensor.
    """
    torch = torch_module("reading PyTorch modules")
    if not isinstance(module, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, received {qualified_name(module)}")
    with eval_mode(module):
        gm = _trace(module) if graph_module is None else graph_module
        _check_graph(gm, module)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        examples = _example_inputs(placeholders, module, example_input)
        _propagate_shapes(gm, module, examples)
        settled = fold_static(gm)
        fold_sequence_first(gm, module)
    namer, names, arrays = _Namer(), {}, {}
    shared = ReadContext("", [], "", None, arrays=arrays)  # the tensors stored so far, and ties
    inputs, layers, outputs = [], [], []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            example = examples[len(inputs)]
            name = namer.take(str(node.target).lstrip("*"))
            names[node] = name
            dtype: Any = torch_dtype_name(example.dtype)
            inputs.append(InputSpec(name=name, shape=tuple(example.shape[1:]), dtype=dtype))
        elif node.op == "output":
            outputs = _outputs(node, names, module)
        elif node.op == "get_attr":
            continue  # a stored tensor: its readers take it as an argument
        else:
            read = _read_node(node, module, names, namer, arrays, shared)
            read = read if isinstance(read, list) else [read]  # a composition: the last is the node
            for layer in read:  # names a reader made itself (HF BERT's, under its module path)
                namer.used.add(layer.name)
            names[node] = read[-1].name
            layers.extend(read)
    layers, outputs = fold_cropped_pools(*resolve_tuples(layers, outputs))
    unused = [key for key in _unused_keys(module, arrays) if key not in shared.tied]
    spec = mark_channel_inputs(ModelSpec(
        name=type(module).__name__,
        provenance=provenance("torch", framework_version=torch.__version__,
                              source_class=qualified_name(module), source_file=source_file,
                              transforms=tracer_record(tracer, examples, settled)),
        inputs=inputs,
        layers=_unchain(layers, inputs, outputs),
        outputs=outputs,
        extra={"torch": {"unused_state_dict_keys": unused}} if unused else {},
    ), "channels_first")
    return Archive(spec, arrays)

