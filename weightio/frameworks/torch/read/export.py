"""Read a live ``nn.Module`` through ``torch.export``, with torch.fx where export cannot go.

``read_module`` exports the module first:
``torch.export.export(module.eval(), example_inputs, strict=False)`` (the example inputs are
``example_input=``, or zeros of the shape an input's first ``nn.Linear`` takes, found by an fx
trace). The program's ATen graph has parameters under their state-dict keys and records, per
node, the ``nn_module_stack`` it ran in. It is rebuilt in the terms the module reader knows,
then read by ``read_torch_module`` (on the rebuilt graph itself, not a re-trace):

- **Groups.** Every ATen node records ``nn_module_stack``, the modules whose ``forward`` it ran
  in. A node belongs to the outermost module of its stack that weightio has a reader for (an
  ``nn.Linear``, HF's ``BertAttention``), as a module with a reader is a leaf for torch.fx; the
  group becomes one call of the *live* module, so its parameters are read under their
  state-dict keys exactly as the fx path reads them. Each call is checked at trace time: the
  live module run on the group's recorded inputs must give the value the program computed.
- **Constants.** A value that depends on no model input (HF's ``position_ids`` buffer sliced to
  the traced length, the token-type embedding of its all-zero ids) is the number it had when
  traced: a stored tensor named ``<module path>.output`` (a group's) or
  ``<node name>.value``, repeated over the batch.
- **Key padding masks.** Nodes that depend on one model input only and feed attention groups
  only (HF's ``create_bidirectional_mask``: ``arange``, ``index``, ``__and__``, ``expand``) are
  the mask's preparation. They are run on random 0/1 masks at trace time; when they compute
  "key *j* is attended iff ``mask[n, j] != 0``" on every probe, the attention reads the model
  input itself as its key padding mask; otherwise the model is refused by node name.
- **Other nodes** go through the ``.pt2`` reader's ATen mapping (``program.Rebuild.call``),
  one mapping for both.

- **Names.** A rebuilt call is named, and its layer's ``source_class`` recorded, after the source
  call export notes in ``torch_fn`` (``x.view`` -> ``view``, ``method:view``), so an archive read
  either way has the same layer names and sources.
- **Identity modules** (``nn.Dropout``, ``nn.Identity``, stochastic depth in eval mode) return
  their input and would leave no node: while exporting, such a call returns a clone, which
  groups into the module's own layer as on the fx path.

Shape arithmetic (``sym_size``, the literal sizes export bakes into ``view``) is settled for the
traced size, as on the fx path, the batch of a ``view`` kept free (``-1``); provenance then says
``shape arithmetic settled for the traced input shape(s) [...]``, on both paths alike.

**Where fx reads instead** (``tracer="export"``, the default; provenance says
``traced with torch.fx`` and ``torch.export not used (<why>)``): export raises (data-dependent
shapes, a ``forward`` that fails on the inferred example), the program holds an ATen operation
the rebuild does not map (``prelu``, ``chunk``, a function export decomposes into several
operations such as ``F.softsign``), a recurrent module (fx reads its tuple by pick), a
``batch_first=False`` attention between transposes (fx folds them), or ``F.dropout`` is called
as a function (export drops it in eval mode, fx keeps a dropout layer), or a module stores
its weight encoded (a torch parametrization such as weight norm, weightio's int8 modules:
the program computes the decoded weight, fx reads the stored tensors as they are). A function layer's
numeric suffix can differ from fx's where fx's graph held more calls of that function (shape
reads and tuple unpacking are ``getitem`` nodes too). ``tracer="fx"`` and
``tracer="export-only"`` use one tracer. A random draw no input changes (``torch.rand`` in
``forward``) is refused with no fallback (``RandomDraw``): fx would store the one draw it saw
as a constant.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from weightio.errors import (
    InvalidInputError,
    TraceError,
    UnsupportedLayerError,
)
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import qualified_name, torch_module
from weightio.frameworks.torch.nesting import module_nesting, regrouped
from weightio.frameworks.torch.read.attention import MULTI_ARGUMENT_MODULES, TRACED_FORWARDS
from weightio.frameworks.torch.read.base import TORCH_READ
from weightio.frameworks.torch.read.program import Rebuild, install
from weightio.frameworks.torch.read.trace import (
    FxTraceError,
    eval_mode,
    inferred_examples,
    quiet,
    read_torch_module,
    tracer_record,
)

#: The registry key of ``ExportedCall`` (a group whose call the live module cannot take as is).
EXPORTED_CALL = f"{__name__}.ExportedCall"
_MHA = "torch.nn.MultiheadAttention"
_RECURRENT = frozenset({"torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNN"})
#: Random masks the preparation of a key padding mask is checked on.
MASK_PROBES = 8
_CLASSES: dict[str, type] = {}


def exported_call_class() -> type:
    """``ExportedCall(inner, pick, masks)``: ``inner(*args)[pick]``, with the arguments at
    ``masks`` replaced by what the program's preparation makes of them. ``inner`` is held, not
    registered, so its tensors stay at the live module's own state-dict keys.
    """
    if "ExportedCall" not in _CLASSES:
        nn = torch_module("reading PyTorch modules").nn

        class ExportedCall(nn.Module):
            def __init__(self, inner: Any, pick: int | None, masks: dict[int, Any]) -> None:
                super().__init__()
                object.__setattr__(self, "inner", inner)
                self.pick = pick
                object.__setattr__(self, "masks", masks)

            def forward(self, *args: Any, **kwargs: Any) -> Any:
                args = tuple(self.masks[i](a) if i in self.masks else a for i, a in enumerate(args))
                out = self.inner(*args, **kwargs)
                return out if self.pick is None else out[self.pick]

        ExportedCall.__module__, ExportedCall.__qualname__ = __name__, "ExportedCall"
        _CLASSES["ExportedCall"] = ExportedCall
    return _CLASSES["ExportedCall"]


MULTI_ARGUMENT_MODULES[EXPORTED_CALL] = lambda node: None  # its inner module's reader checks


@TORCH_READ.register(EXPORTED_CALL, produces=())
def _exported_call(call: Any, ctx: Any) -> Any:
    """Read the live module the call wraps, with its own reader (which sees the mask inputs)."""
    reader = TORCH_READ.lookup(qualified_name(call.inner), layer=ctx.layer_name)
    return reader(call if call.masks else call.inner, ctx)  # no masks: the module as it is


def key_padding_inputs(call: Any) -> frozenset[int]:
    """The argument positions a module call takes as (N, S) key padding masks (0 = padded)."""
    return frozenset(getattr(call, "masks", {}) or ())


def live_module(call: Any) -> Any:
    """The module a reader reads: the wrapped one of an ``ExportedCall``, or the call itself."""
    return getattr(call, "inner", call)


def _stack_key(entry: Any) -> str:
    return entry if isinstance(entry, str) else qualified_name(entry)


class _Groups:
    """Which live module each ATen node belongs to (see the module doc)."""

    def __init__(self, gm: Any, live: Any) -> None:
        self.of: dict[Any, tuple[str, str]] = {}  # node -> (stack key, module path)
        self.members: dict[str, list[Any]] = {}
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            for key, (path, _cls) in (node.meta.get("nn_module_stack") or {}).items():
                if not path:
                    continue
                try:
                    sub = live.get_submodule(path)
                except AttributeError:
                    break
                if qualified_name(sub) in TORCH_READ:
                    self.of[node] = (key, path)
                    self.members.setdefault(key, []).append(node)
                    break


def _recorded(gm: Any, examples: tuple[Any, ...]) -> dict[Any, Any]:
    """Every node's value on the example inputs."""
    torch = torch_module("reading PyTorch modules")
    values: dict[Any, Any] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            value = super().run_node(n)
            # An in-place user (F.relu(x, inplace=True) exports as aten.relu_) would change the
            # recorded value under us: keep a copy of what this node computed.
            mutated = any(str(getattr(u.target, "__name__", "")).split(".")[0].endswith("_")
                          for u in n.users)
            values[n] = value.clone() if mutated and isinstance(value, torch.Tensor) else value
            return value

    with torch.no_grad():
        _Recorder(gm).run(*examples)
    return values


def _depends(gm: Any) -> dict[Any, frozenset[Any]]:
    """The model inputs (placeholders) each node's value depends on."""
    fx = torch_module("reading PyTorch modules").fx
    deps: dict[Any, frozenset[Any]] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            deps[node] = frozenset({node})
            continue
        inputs: list[Any] = []
        fx.node.map_arg((node.args, node.kwargs), inputs.append)
        deps[node] = frozenset().union(*(deps.get(n, frozenset()) for n in inputs))
    return deps


class ExportRebuild(Rebuild):
    """The ``.pt2`` rebuild, with live-module groups, constants and key padding masks."""

    def __init__(self, torch: Any, gm: Any, live: Any, examples: tuple[Any, ...]) -> None:
        super().__init__(torch, gm)
        self.live = live
        self.values = _recorded(gm, examples)
        self.deps = _depends(gm)
        self.groups = _Groups(gm, live)
        self.batch = int(examples[0].shape[0]) if examples and examples[0].dim() else None
        self.done: set[str] = set()
        self.constants: dict[Any, Any] = {}  # node -> get_attr node of its stored value
        self.mask_of: dict[Any, Any] = {}  # prepared mask node -> the model input it reads
        seeded = torch.Tag.nondeterministic_seeded
        self.random: set[Any] = set()  # random draws, and what is computed from them
        for n in gm.graph.nodes:
            if n.op == "call_function" and (
                seeded in getattr(n.target, "tags", ()) and not _eval_dropout(n, torch)
                or any(dep in self.random for dep in _direct(n))
            ):
                self.random.add(n)
        aten = torch.ops.aten
        self.sized = {aten.view.default, aten.reshape.default, aten._unsafe_view.default,
                      aten.expand.default}
        #: Whether a size was settled for the traced input: a ``sym_size``, or the literal
        #: sizes export bakes into a ``view`` (the archive then records the traced size).
        self.settled = False
        self.inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        #: ``self.class_token.expand(n, -1, -1)``: a stored tensor repeated over the batch,
        #: read as the expand fx reads (not a constant of the traced batch).
        self.expanded = {
            n for n in gm.graph.nodes
            if n.target is aten.expand.default and n.args[0].op == "get_attr" and self.batch
            and self.inputs and list(n.args[1])[:1] == [self.batch]
            and self.values[n.args[0]].dim() and int(self.values[n.args[0]].shape[0]) == 1
        }
        self._find_masks()
        self.calls: dict[Any, int] = {}  # source call (torch_fn id) -> its ATen nodes read here
        for n in gm.graph.nodes:
            call_id = (n.meta.get("torch_fn") or (None,))[0]
            if (n.op == "call_function" and call_id and n not in self.groups.of
                    and n not in self.mask_chain and n.target not in self.identities
                    and n.target not in self.checks and not self.is_constant(n)):
                self.calls[call_id] = self.calls.get(call_id, 0) + 1

    # -- what a node is -------------------------------------------------------------------

    def is_constant(self, node: Any) -> bool:
        """A computed tensor no model input changes (settled for the traced size)."""
        if node in self.random and node.op == "call_function" and not self.deps.get(node):
            raise RandomDraw(
                f"the program's node {node.name!r} ({node.target}) draws random numbers "
                "(dropout or stochastic depth applied in eval mode?); its traced value is one "
                "draw, not a constant", layer=node.name)
        return (node.op == "call_function" and not self.deps.get(node) and node not in self.expanded
                and isinstance(self.values.get(node), self.torch.Tensor))

    def _users_outside(self, nodes: list[Any]) -> list[Any]:
        inside = set(nodes)
        return [n for n in nodes if any(u not in inside for u in n.users)]

    def _find_masks(self) -> None:
        """Ungrouped nodes on one input, read only by groups: a key padding mask's preparation
        (``mask_of``, its last nodes) and every node only it reads (``mask_chain``).
        """
        for node in self.gm.graph.nodes:
            if node.op != "call_function" or node in self.groups.of or self.is_constant(node):
                continue
            if (len(self.deps[node]) == 1 and node.users and _looks_like_mask(self.values.get(node))
                    and all(u in self.groups.of for u in node.users)):
                (self.mask_of[node],) = self.deps[node]
        self.mask_chain = set(self.mask_of)
        self.mask_chain.update(n for n in self.gm.graph.nodes if n.target in self.checks)
        for node in reversed(list(self.gm.graph.nodes)):
            if (node.op == "call_function" and node not in self.groups.of and node.users
                    and all(u in self.mask_chain for u in node.users)):
                self.mask_chain.add(node)

    def _check_mask(self, node: Any, source: Any) -> Any:
        """The preparation ``source -> node`` as a module, once it proves a key padding mask."""
        torch = self.torch
        nodes = [n for n in self.gm.graph.nodes
                 if n in self.mask_chain and n.target not in self.checks and _feeds(n, node)]
        graph, env = torch.fx.Graph(), {}
        env[source] = graph.placeholder("mask")
        for n in nodes:
            if self.deps[n] - {source}:
                raise _not_mask(node, f"reads another input than {source.name} (at {n.name})")
            env[n] = graph.node_copy(n, lambda a: env[a] if a in env else self._literal(a, node))
        graph.output(env[node])
        prepare = torch.fx.GraphModule(torch.nn.Module(), graph, "KeyPaddingMask")
        example = self.values[source]
        generator = torch.Generator().manual_seed(0)
        for probe in range(MASK_PROBES):
            mask = (torch.rand(example.shape, generator=generator) < 0.6).to(example.dtype)
            mask[:, 0] = 1  # a row of padding only is no sentence
            if probe == 0:
                mask = torch.ones_like(example)
            with torch.no_grad():
                out = prepare(mask)
            attended = out if out.dtype == torch.bool else out == 0
            if out.dtype != torch.bool and bool(((out != 0) & (out > -1e4)).any()):
                raise _not_mask(node, "adds finite values where it masks")
            want = (mask != 0)[:, None, None, :]
            if out.dim() != 4 or not bool((attended == want).all()):
                raise _not_mask(node, f"computes a mask of shape {list(out.shape)} that is not "
                                "mask[n, j] != 0 for key j")
        return prepare

    def _literal(self, arg: Any, node: Any) -> Any:
        if self.is_constant(arg) or arg in self.keys:
            raise _not_mask(node, "reads a stored tensor")
        raise _not_mask(node, f"reads {arg.name}")

    # -- the rebuild ----------------------------------------------------------------------

    def lookup(self, item: Any) -> Any:
        """A constant as its stored tensor, anything else as the ``.pt2`` rebuild has it."""
        if self.is_constant(item):
            return self.constant(item)
        return super().lookup(item)

    def constant(self, node: Any) -> Any:
        """A value no model input changes, stored (without its batch axis when it repeats)."""
        if node not in self.constants:
            value = self.values[node].detach()
            if value.dim() >= 2 and self.batch and value.shape[0] in (1, self.batch) and bool(
                (value == value[:1]).all()
            ):
                value = value[0]  # repeated over the batch: one sample's, as a stored tensor
            group = self.groups.of.get(node)
            if group is None and any(isinstance(self.values.get(dep), self.nn.Parameter)
                                     or (dep in self.keys and isinstance(
                                         _stored_value(self.gm, self.keys[dep]), self.nn.Parameter))
                                     for dep in _direct(node)):
                raise ExportGap(f"{node.name!r} computes with parameters only; fx reads it (or "
                                "refuses it) with the parameters kept", layer=node.name)
            key = f"{group[1]}.output" if group else f"{node.name}.value"
            install(self.root, key, value.clone(), self.nn)
            self.constants[node] = self.graph.get_attr(key)
        return self.constants[node]

    def call(self, node: Any) -> Any:
        """Constants and mask preparation are made where read; a group at its output node."""
        if self.is_constant(node):
            return None  # made where it is read
        if node in self.mask_chain:
            return None  # the attention reads the model input; checked when the group is built
        group = self.groups.of.get(node)
        if node in self.expanded and group is None:
            self.settled = True
            size = self.graph.call_method("size", (self.lookup(self._batch_source(node)), 0))
            return self.graph.create_node(
                "call_method", "expand", (self.lookup(node.args[0]), size, *node.args[1][1:]),
                name=self.name_hint(node))
        if group is None:
            if node.target is self.torch.ops.aten.sym_size.int:
                self.settled = True
            if node.target in self.sized:
                node = self._free_batch(node)
            call_id = (node.meta.get("torch_fn") or (None,))[0]
            if self.calls.get(call_id, 0) > 1:
                raise ExportGap(
                    f"the call {node.meta['torch_fn'][1]} became {self.calls[call_id]} ATen "
                    f"operations (at {node.name!r}), which read as a different composition than "
                    "the function fx reads", layer=node.name)
            return super().call(node)
        key, path = group
        members = self.groups.members[key]
        outputs = self._users_outside(members)
        if len(outputs) != 1:
            names = ", ".join(n.name for n in outputs)
            raise UnsupportedLayerError(
                f"module {path!r} gives {len(outputs)} values the rest of the program reads "
                f"({names}); weightio reads modules with one output", layer=path)
        if node is not outputs[0]:
            return None  # the group is one call, made at its output
        return self._group_call(node, key, path, members)

    def source_key(self, node: Any) -> str | None:
        """The registry key torch.fx gives the source call (``x.sigmoid()`` ->
        ``method:sigmoid``, ``a + b`` -> ``operator.add``, ``F.relu`` ->
        ``torch.nn.functional.relu``), from export's ``torch_fn`` record; a layer's
        ``source_class`` says what the model's code called, not the ATen op it became.
        """
        torch_fn = node.meta.get("torch_fn") if hasattr(node, "meta") else None
        if not torch_fn or not isinstance(torch_fn[1], str):
            return None
        kind, _, name = torch_fn[1].rpartition(".")
        name = name.strip("_") if name.startswith("__") else name
        if kind == "method_descriptor" and name.endswith("_"):
            name = name[:-1]  # ``out += x``: Tensor.add_, which fx records as operator.add
        if kind == "method_descriptor":
            candidates = [f"method:{name}", f"operator.{name}", f"torch.{name}"]
        elif kind == "function":
            candidates = [f"torch.nn.functional.{name}", f"torch.{name}"]
        else:
            candidates = [f"torch.{name}", f"torch.nn.functional.{name}"]
        return next((key for key in candidates if key in TORCH_READ), None)

    def name_hint(self, node: Any) -> str | None:
        """The source call's name, as torch.fx names it (``view``, ``add``, ``flatten``): export
        records it in ``torch_fn`` (``('view_1', 'method_descriptor.view')``).
        """
        torch_fn = node.meta.get("torch_fn") if hasattr(node, "meta") else None
        if not torch_fn or not isinstance(torch_fn[1], str):
            return None
        name = torch_fn[1].rpartition(".")[2].strip("_")
        return name if name.isidentifier() else None  # ``add_`` is named ``add``, as fx has it

    def _batch_source(self, node: Any) -> Any:
        """The tensor whose batch an expand repeats over: the model tensor its user joins it to
        (ViT's ``cat([class_token.expand(n, -1, -1), x])`` with ``n = x.shape[0]``), else the
        first model input.
        """
        for user in node.users:
            for dep in _direct(user):
                if dep is not node and self.deps.get(dep) and not self.is_constant(dep):
                    return dep
        return self.inputs[0]

    def select(self, node: Any) -> Any:
        """``x[:, 0]`` as torch.fx has it: ``getitem`` with an integer index on one axis."""
        data, dim, index = node.args[0], int(node.args[1]), int(node.args[2])
        value = self.values.get(data)
        rank = value.dim() if value is not None else 0
        dim = dim + rank if dim < 0 else dim
        if dim < 1 or (rank >= 3 and dim == rank - 2 and index >= 0):
            return super().select(node)  # x[:, 0] of a sequence: slice + flatten, as before
        return self.graph.create_node(
            "call_function", operator.getitem, (self.value(data), (slice(None),) * dim + (index,)),
            name=self.name_hint(node))

    def _free_batch(self, node: Any) -> Any:
        """``view(x, [2, 64])``: export bakes the traced batch into the sizes; where the first
        size is the batch of ``x`` (which reads model input), it is written ``-1``, as
        ``x.view(-1, 64)``, so the converted model takes any batch.
        """
        data, sizes = node.args[0], node.args[1] if len(node.args) > 1 else None
        value = self.values.get(data)
        if (self.batch is None or not isinstance(sizes, (list, tuple)) or not sizes
                or not self.deps.get(data) or value is None or not value.dim()
                or int(value.shape[0]) != self.batch or sizes[0] != self.batch):
            return node
        if node.target is self.torch.ops.aten.expand.default:
            return node
        # x.view(x.size(0), -1) and x.view(2, 8) are one program; fx tells them apart
        raise ExportGap(f"{node.name!r} views with the traced batch {self.batch} as a literal "
                        "size, which export cannot tell from x.size(0)", layer=node.name)

    def _group_call(self, node: Any, key: str, path: str, members: list[Any]) -> Any:
        torch = self.torch
        inside = set(members)
        external: list[Any] = []
        for member in members:
            for dep in _direct(member):
                if dep in inside or dep in external or dep in self.keys or dep.op == "get_attr":
                    continue
                external.append(dep)
        module = self.live.get_submodule(path)
        if all(self.is_constant(dep) for dep in external) and external:
            return self.constant(node)
        masks, args = {}, []
        for index, dep in enumerate(external):
            if self.is_constant(dep) and _looks_like_mask(self.values[dep]):
                if not _attends_all(self.values[dep]):
                    raise _not_mask(dep, "is a constant mask that hides some keys")
                if index != len(external) - 1:
                    raise _not_mask(dep, "is not the module's last argument")
                continue  # HF's mask of a model called without one: every key attended
            if dep in self.mask_of:
                masks[index] = self._check_mask(dep, self.mask_of[dep])
                args.append(self.mask_of[dep])
            else:
                args.append(dep)
        kwargs: dict[str, Any] = {}
        if qualified_name(module) == _MHA and len(external) == 1:
            # self-attention: query, key and value are one tensor, which the group reads once
            external, args, kwargs = external * 3, args * 3, {"need_weights": False}
        with torch.no_grad():
            result = module(*[self.values[dep] for dep in external], **kwargs)
        pick = None
        if isinstance(result, (tuple, list)) and qualified_name(module) in _RECURRENT:
            raise ExportGap(f"module {path!r} ({qualified_name(module)}) returns a tuple whose "
                            "picks fx reads as the sequence or final state", layer=path)
        if isinstance(result, (tuple, list)):
            pick, result = 0, result[0]
        want = self.values[node]
        if not isinstance(result, torch.Tensor) or result.shape != want.shape or not torch.allclose(
            result, want, rtol=1e-5, atol=1e-6
        ):
            raise UnsupportedLayerError(
                f"module {path!r} ({qualified_name(module)}) called on the values the program "
                f"gives it does not compute the program's {node.name}; weightio cannot tell "
                "which of its arguments are which", layer=path)
        if path not in self.done:  # a module called twice is installed once
            call = exported_call_class()(module, pick, masks) if pick is not None or masks else module
            install(self.root, path, call, self.nn)
        elif pick is not None or masks:
            raise UnsupportedLayerError(f"module {path!r} is called twice with masks or tuple "
                                        "results; weightio reads one such call", layer=path)
        self.done.add(path)
        target = path
        return self.graph.call_module(target, tuple(self.lookup(a) for a in args), kwargs)


def _stored_value(gm: Any, key: str) -> Any:
    """The tensor at state-dict ``key`` of the program's module."""
    owner, _, name = key.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _eval_dropout(node: Any, torch: Any) -> bool:
    """``aten.dropout(x, p, train=False)``: an identity (HF's ``F.dropout(training=False)``)."""
    return node.target is torch.ops.aten.dropout.default and not (
        node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True))


def _looks_like_mask(value: Any) -> bool:
    """A rank-4 boolean, or 0 / very negative floats: what attention adds or selects with."""
    torch = torch_module("reading PyTorch modules")
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        return False
    if value.dtype == torch.bool:
        return True
    return value.is_floating_point() and bool(((value == 0) | (value <= -1e4)).all())


def _attends_all(value: Any) -> bool:
    return bool(value.all()) if value.dtype == torch_module("reading").bool else bool((value == 0).all())


def _direct(node: Any) -> list[Any]:
    fx = torch_module("reading PyTorch modules").fx
    found: list[Any] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _feeds(node: Any, target: Any) -> bool:
    pending, seen = list(node.users), set()
    while pending:
        user = pending.pop()
        if user is target:
            return True
        if user not in seen:
            seen.add(user)
            pending.extend(user.users)
    return node is target


def _not_mask(node: Any, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"the attention mask node {node.name!r} {why}; weightio reads attention masks that are "
        "a model input of 0/1 per key (HF's attention_mask)", layer=node.name)


#: ``tracer=`` of ``read_module``: ``"export"`` (torch.export, falling back to torch.fx where
#: export cannot go: the default), ``"export-only"``, ``"fx"`` (torch.fx only, the old reader).
TRACERS = ("export", "export-only", "fx")
#: weightio's int8 modules (``write/quantized.py``, ``convert --keep-int8``): read through fx.
_ENCODED_MODULES = ("QuantizedLinear", "QuantizedConv")
EXPORT, FX = "torch.export", "torch.fx"


def read_exported(module: Any, example_input: Any, *, source_file: Any = None) -> Archive:
    """Read ``module`` through ``torch.export`` (see the module doc)."""
    torch = torch_module("reading PyTorch modules")
    examples = inferred_examples(module, example_input)
    traced = [name for name, sub in module.named_modules() if qualified_name(sub) in TRACED_FORWARDS]
    if traced:  # torch's own forward takes a fast path in eval mode that export does not see
        raise ExportGap(f"{traced[0] or 'the model'} ({qualified_name(module.get_submodule(traced[0]))}) "
                        "is read through weightio's traced forward, which fx follows", layer=traced[0])
    encoded = [name for name, sub in module.named_modules()
               if hasattr(sub, "parametrizations") or type(sub).__name__ in _ENCODED_MODULES]
    if encoded:  # the program holds the decoded weight; fx reads the stored g, v or int8 tensors
        raise ExportGap(f"{encoded[0] or 'the model'} ({qualified_name(module.get_submodule(encoded[0]))}) "
                        "stores its weight encoded (a parametrization or int8), which fx reads as "
                        "stored", layer=encoded[0])
    with eval_mode(module), quiet(), _identities_marked(module):
        try:
            program = torch.export.export(module, examples, strict=False)
        except ExportGap:
            raise
        except Exception as exc:  # export raises many types; each means "not exportable"
            raise ExportTraceError(
                f"torch.export could not export {qualified_name(module)} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        gm = program.module(check_guards=False)
        rebuild = ExportRebuild(torch, gm, module, examples)
        rebuilt = rebuild.run()
        archive = read_torch_module(rebuilt, example_input=examples, source_file=source_file,
                                    tracer=EXPORT, graph_module=rebuilt)
    spec = archive.spec
    layers = [_unwrapped(layer, module) for layer in spec.layers]
    transforms = spec.provenance.transforms
    if rebuild.settled and not any(line.startswith("shape arithmetic") for line in transforms):
        transforms = sorted({*transforms, *tracer_record(EXPORT, examples, True)})
    provenance = spec.provenance.model_copy(
        update={"source_class": qualified_name(module), "transforms": transforms})
    spec = spec.model_copy(update={"provenance": provenance, "name": type(module).__name__,
                                   "layers": layers})
    return Archive(spec, archive.stored)


def _unwrapped(layer: Any, module: Any) -> Any:
    """A layer read from an ``ExportedCall`` names the live module's class, as fx has it."""
    if layer.source_class != EXPORTED_CALL:
        return layer
    try:
        inner = module.get_submodule(layer.name)
    except AttributeError:
        return layer
    return layer.model_copy(update={"source_class": qualified_name(inner)})


@contextmanager
def _identities_marked(module: Any) -> Iterator[None]:
    """A module with a reader that returns its input itself in eval mode (``nn.Dropout``,
    ``nn.Identity``, torchvision's ``StochasticDepth``) leaves no ATen node, so the program
    would lose the layer fx reads. While exporting, such a call returns ``output.clone()``
    (one ATen node inside the module's stack, grouped into a call of the live module as fx has
    it); the clone is an identity and reads as the module's own layer.
    """
    torch = torch_module("reading PyTorch modules")

    inside = [0]  # calls of modules with readers under way: their own F.dropout is theirs

    def enter(sub: Any, args: Any) -> None:
        inside[0] += 1

    def mark(sub: Any, args: Any, output: Any) -> Any:
        inside[0] -= 1
        if isinstance(output, torch.Tensor) and args and output is args[0]:
            return output.clone()
        return None

    handles = []
    for sub in module.modules():
        if sub is not module and qualified_name(sub) in TORCH_READ:
            handles += [sub.register_forward_pre_hook(enter), sub.register_forward_hook(mark)]
    try:
        with _FunctionalDropoutRefused(inside):
            yield
    finally:
        for handle in handles:
            handle.remove()


def _FunctionalDropoutRefused(inside: list[int]) -> Any:  # noqa: N802 - a context manager class made on demand
    """``F.dropout(x, p, training=False)`` in a ``forward`` leaves no ATen node at all, so the
    program cannot show the dropout layer fx reads: seeing one, export gives way to fx.
    """
    torch = torch_module("reading PyTorch modules")
    F = torch.nn.functional
    dropouts = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                F.feature_alpha_dropout}

    class Refuse(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in dropouts and not inside[0]:
                raise ExportGap(f"{func.__name__} called as a function, which torch.export "
                                "drops in eval mode (fx keeps it as a dropout layer)")
            return func(*args, **(kwargs or {}))

    return Refuse()


class RandomDraw(UnsupportedLayerError):
    """The program draws random numbers no input changes (``torch.rand`` in ``forward``): torch.fx
    would bake the one draw it saw into a constant, so this refusal is final, with no fallback.
    """


class ExportGap(UnsupportedLayerError):
    """The program would lose something fx reads (a functional dropout): fx reads the module."""


class ExportTraceError(TraceError):
    """torch.export could not export the module: the fallback to torch.fx takes over."""


def read_module(module: Any, *, example_input: Any = None, source_file: Any = None,
                tracer: str = "export") -> Archive:
    """Read a live module: torch.export first, torch.fx where export cannot go.

    ``tracer="export"`` (the default) exports the module and reads the ATen program; when
    export raises, or the program holds something the export path cannot map
    (``UnsupportedLayerError``, ``TraceError``), the module is traced with torch.fx instead, and
    when fx refuses it too, fx's refusal is raised (export's when fx cannot trace it at all).
    ``"export-only"`` and ``"fx"`` use one tracer. The archive's ``provenance.transforms`` says
    which tracer read it (``traced with torch.export``).

    Raises:
        TraceError: neither can trace it (export needs ``example_input=`` unless an input
            feeds an ``nn.Linear``).
        InvalidInputError: an unknown ``tracer=``.
    """
    if tracer not in TRACERS:
        raise InvalidInputError(f"tracer={tracer!r}: choose one of {', '.join(TRACERS)}")
    archive = _read_either(module, example_input, source_file, tracer)
    if hasattr(module, "named_modules"):  # a nested model to_torch built reads as ``outer/inner``
        archive = regrouped(archive, module_nesting(module))
    return archive


def _read_either(module: Any, example_input: Any, source_file: Any, tracer: str) -> Archive:
    """``read_module``'s reading, before nested groups are named."""
    if tracer == "fx":
        return read_torch_module(module, example_input=example_input, source_file=source_file)
    if tracer == "export-only":
        return read_exported(module, example_input, source_file=source_file)
    torch = torch_module("reading PyTorch modules")
    if not isinstance(module, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, received {qualified_name(module)}")
    try:
        examples = inferred_examples(module, example_input)
    except FxTraceError as exc:  # no example input, and fx cannot trace it to infer one
        raise TraceError(
            f"{exc}. weightio reads such a module through torch.export when given "
            "example_input= (a tensor, or a tuple of them, that forward accepts)"
        ) from None
    except TraceError:  # no shape to export at: fx's reader says what it refuses first
        return read_torch_module(module, example_input=example_input, source_file=source_file)
    try:
        return read_exported(module, examples, source_file=source_file)
    except RandomDraw as draw:  # fx's own refusal where it has one, else this one: fx would
        read_torch_module(module, example_input=example_input, source_file=source_file)
        raise draw from None  # ... have read the draw it saw as a constant
    except Exception as error:  # anything export's path cannot map: fx reads it as before
        export_error = error
    try:
        archive = read_torch_module(module, example_input=example_input, source_file=source_file)
    except FxTraceError:
        raise export_error from None
    reason = f"{type(export_error).__name__}: {str(export_error).splitlines()[0]}"
    spec = archive.spec
    transforms = sorted({*spec.provenance.transforms, f"torch.export not used ({reason[:300]})"})
    provenance = spec.provenance.model_copy(update={"transforms": transforms})
    return Archive(spec.model_copy(update={"provenance": provenance}), archive.stored)
