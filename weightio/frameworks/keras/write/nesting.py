"""Nested Keras models rebuilt from ``outer/inner`` spec names (issue 14, deliverable 3).

The reader inlines a model used as a layer as its layers named ``<model>/<layer>``; the writer
first builds one flat model, then, when asked, this module re-wires the same layer objects
(weights already set) into a Functional model per ``/`` group, called as one layer by the
model around it, so ``model.get_layer('mobilenetv2')`` is a Model again. Any depth.

A group is rebuilt only when it is a clean sub-graph: every tensor it reads from outside is
ready before its first layer runs (nothing outside the group sits between two of its layers).
Otherwise the flat form is kept with a warning, or :class:`NestingError` is raised when the
caller required nesting.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from weightio.errors import UnsupportedLayerError


class NestingError(UnsupportedLayerError):
    """A ``/`` group of layers is not a clean sub-graph, so it cannot be one nested model."""


def _group_of(path: tuple[str, ...], depth: int) -> str | None:
    return path[depth] if len(path) > depth + 1 else None


def nest_model(keras: Any, model: Any, paths: dict[str, tuple[str, ...]], *, strict: bool,
               classes: dict[str, str] | None = None) -> Any:
    """``model`` (flat) rebuilt with a nested Functional model per ``/`` group.

    ``paths`` maps each Keras layer name to its spec name split on ``/``; layers it does not
    list (inserted activations, permutes) join the group of the layer that consumes them.
    ``classes`` (the reader's ``model_classes``: ``""`` for the model, else a group's path) says
    which models were ``Sequential``: each of those that is still a chain of layers is built as
    a ``keras.Sequential`` of the same layer objects, the rest stay Functional.
    """
    _CALLS.classes = classes or {}
    graph = getattr(model, "_functional", None) or model  # a built Sequential's graph
    ops = [op for op in graph.operations if op.__class__.__name__ != "InputLayer"]
    nodes = {id(n) for by_depth in graph._nodes_by_depth.values() for n in by_depth}
    calls = _CALLS.__dict__.setdefault("by_op", {})
    for op in ops:  # the call of each op in the flat graph (a Sequential may have called it before)
        calls[id(op)] = next((n for n in op._inbound_nodes if id(n) in nodes), op._inbound_nodes[0])
    owner: dict[int, tuple[str, ...]] = {}
    for op in reversed(ops):  # consumers come later: fill unlisted ops from their consumer
        path = paths.get(op.name)
        if path is None:
            made = {id(t) for t in keras.tree.flatten(_node(op).outputs)}
            consumers = [o for o in ops if any(id(t) in made for t in _node(o).input_tensors)]
            path = next((owner[id(c)][:-1] + (op.name,) for c in consumers if id(c) in owner),
                        (op.name,))
        owner[id(op)] = path
    try:
        nested = _rebuild(keras, graph, ops, owner, model.name)
    except NestingError as error:
        if strict:
            raise
        warnings.warn(f"{error}; the model is written flat", stacklevel=3)
        return model
    finally:
        for op in ops:
            calls.pop(id(op), None)
    for op in ops:  # only once every group was rebuilt: a refused nesting keeps the flat names
        if len(owner[id(op)]) > 1:
            op.name = owner[id(op)][-1]
    return nested


#: Per thread, ``by_op``: id(op) -> its node in the flat graph being rebuilt (set and cleared by
#: ``nest_model``), so two threads writing Keras models at once do not see each other's ops;
#: ``classes``: the ``model_classes`` of the model being rebuilt.
_CALLS = threading.local()


def _node(op: Any) -> Any:
    return _CALLS.by_op[id(op)]


def _rebuild(
    keras: Any, graph: Any, ops: list[Any], owner: dict[int, tuple[str, ...]], name: str
) -> Any:
    inputs = graph.inputs
    fresh = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in inputs]
    values = {id(t): f for t, f in zip(inputs, fresh)}
    final = [t for t in keras.tree.flatten(graph._outputs_struct)]
    _run(keras, ops, owner, values, depth=0, final=final)
    outputs = keras.tree.map_structure(lambda t: values[id(t)], graph._outputs_struct)
    rebuilt = keras.Model(fresh if len(fresh) > 1 else fresh[0], outputs, name=name)
    if _CALLS.classes.get("") == "Sequential":
        return as_sequential(keras, rebuilt) or rebuilt
    return rebuilt


def as_sequential(keras: Any, model: Any) -> Any | None:
    """A ``keras.Sequential`` of ``model``'s layers (the same objects, so the same weights) when
    the Functional ``model`` is a chain: one input, each layer called on the previous output
    alone, one output. ``None`` otherwise, or where Keras refuses to build it.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    nodes = {id(n) for by_depth in model._nodes_by_depth.values() for n in by_depth}
    layers, current = [], model.inputs[0]
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        node = next((n for n in op._inbound_nodes if id(n) in nodes), None)
        if (not isinstance(op, keras.layers.Layer) or node is None
                or len(node.arguments.args) != 1
                or any(v is not None and (k, v) != ("training", False)  # as the flat writer's
                       for k, v in node.arguments.kwargs.items())  # Sequential of a chain
                or node.arguments.args[0] is not current or len(node.outputs) != 1):
            return None
        layers.append(op)
        current = node.outputs[0]
    if current is not model.outputs[0] or not layers:
        return None
    source = model.inputs[0]
    try:
        return keras.Sequential(
            [keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name), *layers],
            name=model.name)
    except Exception:  # noqa: BLE001 - the Functional form computes the same; keep it
        return None


def _run(keras: Any, ops: list[Any], owner: dict[int, tuple[str, ...]], values: dict[int, Any],
         depth: int, final: list[Any]) -> None:
    """Call ``ops`` (topological order) on ``values``, nesting groups below ``depth``."""
    done: set[int] = set()
    for index, op in enumerate(ops):
        if id(op) in done:
            continue
        group = _group_of(owner[id(op)], depth)
        if group is None:
            args, kwargs = _node(op).arguments.fill_in(values)
            out = op(*args, **kwargs)
            for t, v in zip(keras.tree.flatten(_node(op).outputs), keras.tree.flatten(out)):
                values[id(t)] = v
            done.add(id(op))
            continue
        members = [o for o in ops[index:] if _group_of(owner[id(o)], depth) == group]
        done.update(id(o) for o in members)
        _call_group(keras, group, members, ops, owner, values, depth, final)


def _call_group(keras: Any, group: str, members: list[Any], ops: list[Any],
                owner: dict[int, tuple[str, ...]], values: dict[int, Any], depth: int,
                final: list[Any]) -> None:
    produced = {id(t) for o in members for t in keras.tree.flatten(_node(o).outputs)}
    member_ids = {id(o) for o in members}
    outer_in: list[Any] = []
    for o in members:
        for t in _node(o).input_tensors:
            if id(t) not in produced and all(id(x) != id(t) for x in outer_in):
                if id(t) not in values:
                    raise NestingError(
                        f"the layers named {group}/... are not one clean sub-graph: "
                        f"{o.name} reads a tensor computed outside the group after it starts",
                        layer=group,
                    )
                outer_in.append(t)
    read_outside: list[Any] = []
    for o in ops:
        if id(o) in member_ids:
            continue
        for t in _node(o).input_tensors:
            if id(t) in produced and all(id(x) != id(t) for x in read_outside):
                read_outside.append(t)
    for t in final:
        if id(t) in produced and all(id(x) != id(t) for x in read_outside):
            read_outside.append(t)
    inner_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in outer_in]
    inner_values = {id(t): f for t, f in zip(outer_in, inner_inputs)}
    _run(keras, members, owner, inner_values, depth + 1, read_outside)
    inner = keras.Model(inner_inputs if len(inner_inputs) > 1 else inner_inputs[0],
                        [inner_values[id(t)] for t in read_outside] if len(read_outside) > 1
                        else inner_values[id(read_outside[0])], name=group)
    if _CALLS.classes.get("/".join(owner[id(members[0])][: depth + 1])) == "Sequential":
        inner = as_sequential(keras, inner) or inner
    called = inner([values[id(t)] for t in outer_in] if len(outer_in) > 1 else values[id(outer_in[0])])
    for t, v in zip(read_outside, keras.tree.flatten(called)):
        values[id(t)] = v
