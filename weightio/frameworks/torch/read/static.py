"""What the traced input size settles, folded into the fx graph before its nodes are read.

Real models compute with shapes: shufflenet's channel shuffle reads ``x.size()``, divides the
channel count and views with the result; ViT reads ``x.shape[0]``. torch.fx records that
arithmetic as nodes. Each is resolved here, once shapes are propagated, for the traced input
size, and its users receive the number: the converted model is fixed to that size anyway (its
input spec records it). The one size that is not fixed is the batch: ``size(0)`` resolves to
``BATCH``, which a reader may place where torch takes the batch (``view(BATCH, …)`` reads as
``view(-1, …)``); arithmetic on it is refused by name.

``contiguous()`` changes memory, not values: its uses read its input. ``chunk``/``split`` pieces
become ``x[:, a:b]`` slices on the traced size (``getitem`` nodes, read as slice layers).
"""

from __future__ import annotations

import operator
from typing import Any

from weightio.errors import UnsupportedLayerError
from weightio.frameworks.torch.common import torch_module

#: Nodes whose value is a shape, a size, or integer arithmetic on them.
_SIZE_METHODS = frozenset({"size", "dim"})
_ARITHMETIC = {
    operator.getitem, operator.floordiv, operator.mul, operator.add, operator.sub,
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
}
_PIECES = frozenset({"chunk", "split"})


class _Batch:
    """The batch size: free in the converted model, so never folded into a number. ``source``
    is the traced tensor whose size it is (``x.shape[0]``), for a layer that needs a batch to
    repeat a value over (``self.class_token.expand(n, -1, -1)``).
    """

    def __init__(self, source: Any = None) -> None:
        self.source = source

    def __repr__(self) -> str:
        return "BATCH"


BATCH = _Batch()


def is_batch(value: Any) -> bool:
    """Whether ``value`` is the (free) batch size of some traced tensor."""
    return isinstance(value, _Batch)


def _fx() -> Any:
    return torch_module("reading PyTorch modules").fx


def _nodes(value: Any) -> list[Any]:
    found: list[Any] = []
    _fx().node.map_arg(value, found.append)
    return found


def _is_assert(node: Any) -> bool:
    return node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert"


def _is_getattr_shape(node: Any) -> bool:
    return node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)


def shape_nodes(graph: Any) -> set[Any]:
    """The nodes computing shapes or integer arithmetic on them (found before propagation)."""
    found: set[Any] = set()
    for node in graph.nodes:
        if node.op == "call_method" and node.target in _SIZE_METHODS or _is_getattr_shape(node):
            found.add(node)
        elif node.op == "call_function" and node.target in _ARITHMETIC:
            feeding = _nodes((node.args, node.kwargs))
            if feeding and all(dep in found for dep in feeding):
                found.add(node)
    return found


def _shape_of(node: Any) -> tuple[Any, ...]:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    if shape is None:
        raise UnsupportedLayerError(
            f"reads the shape of {node.name!r}, which is not a tensor", layer=node.name
        )
    return (_Batch(node), *(int(d) for d in shape[1:]))


def _evaluate(node: Any, values: dict[Any, Any]) -> Any:
    args = [values.get(a, a) if hasattr(a, "op") else a for a in node.args]
    if node.op == "call_method" and node.target == "dim":
        return len(_shape_of(node.args[0]))
    if node.op == "call_method" or _is_getattr_shape(node):
        shape = _shape_of(node.args[0])
        dim = None if _is_getattr_shape(node) else args[1] if len(args) > 1 else node.kwargs.get("dim")
        return shape if dim is None else shape[dim]
    if node.target is operator.getitem:
        return args[0][args[1]]
    if any(is_batch(a) for a in args):
        raise UnsupportedLayerError(
            f"computes {node.target.__name__} with the batch size (fx node {node.name!r}); the "
            "converted model takes any batch, so weightio reads the batch only where torch "
            "places it (view(x.size(0), ...), expand(n, ...))",
            layer=node.name,
        )
    return node.target(*args)


def _resolve(graph: Any, found: set[Any]) -> None:
    values: dict[Any, Any] = {}
    for node in graph.nodes:
        if node in found:
            values[node] = _evaluate(node, values)
        elif _is_assert(node) and all(dep in found for dep in _nodes(node.args)):
            found.add(node)  # shape propagation ran it on the traced input: it holds
        elif node.op != "output":
            node.args = _substitute(node.args, values)
            node.kwargs = _substitute(node.kwargs, values)
    for node in reversed(list(graph.nodes)):
        if node in found and not node.users:
            graph.erase_node(node)


def _substitute(value: Any, values: dict[Any, Any]) -> Any:
    return _fx().node.map_aggregate(value, lambda v: values.get(v, v) if hasattr(v, "op") else v)


def _drop_contiguous(graph: Any) -> None:
    for node in list(graph.nodes):
        if node.op == "call_method" and node.target == "contiguous" and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def _bounds(node: Any) -> list[tuple[int, int, int]] | None:
    """The ``(start, stop)`` of each piece of a chunk/split node on its traced input."""
    data = node.args[0]
    size_arg = node.args[1] if len(node.args) > 1 else node.kwargs.get(
        "chunks" if node.target == "chunk" else "split_size", None
    )
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    shape = getattr(data.meta.get("tensor_meta"), "shape", None)
    if shape is None or not isinstance(dim, int) or isinstance(size_arg, bool):
        return None
    dim %= len(shape)
    if dim == 0:
        return None
    length = int(shape[dim])
    if node.target == "chunk" and isinstance(size_arg, int):
        step = -(-length // size_arg)
        sizes = [min(step, length - start) for start in range(0, length, step)]
    elif isinstance(size_arg, int) and size_arg > 0:
        sizes = [min(size_arg, length - start) for start in range(0, length, size_arg)]
    elif isinstance(size_arg, (list, tuple)) and all(isinstance(s, int) for s in size_arg):
        sizes = list(size_arg)
    else:
        return None
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [(dim, s, s + n) for s, n in zip(starts, sizes)]


def _split_pieces(graph: Any) -> None:
    """``a, b = x.chunk(2, dim=1)`` -> ``a = x[:, 0:c]``, ``b = x[:, c:2c]``."""
    for node in list(graph.nodes):
        if not _pieces_read_by_index(node):
            continue  # used whole: left for the graph check to refuse by name
        users = list(node.users)
        pieces = _bounds(node)
        if pieces is None:
            raise UnsupportedLayerError(
                f"{node.target} with arguments {node.args[1:]} {node.kwargs}: weightio splits "
                "non-batch axes by constant sizes", layer=node.name,
            )
        for user in users:
            dim, start, stop = pieces[user.args[1]]
            index = (*(slice(None),) * dim, slice(start, stop))
            user.args = (node.args[0], index)
        graph.erase_node(node)


def _pieces_read_by_index(node: Any) -> bool:
    return (
        node.op == "call_method" and node.target in _PIECES and bool(node.users)
        and all(u.op == "call_function" and u.target is operator.getitem
                and isinstance(u.args[1], int) for u in node.users)
    )


def static_nodes(graph: Any) -> set[Any]:
    """The nodes ``fold_static`` settles or removes: the graph check lets them through."""
    found = shape_nodes(graph)
    for node in graph.nodes:
        if _is_assert(node) and all(dep in found for dep in _nodes(node.args)):
            found.add(node)
        elif node.op == "call_method" and node.target == "contiguous" and not node.kwargs:
            found.add(node)
        elif _pieces_read_by_index(node):
            found.add(node)
    return found


def fold_static(gm: Any) -> bool:
    """Resolve shape arithmetic, drop ``contiguous()``, turn chunk/split pieces into slices.

    Returns whether any size was settled for the traced input (shape arithmetic or a split's
    pieces): the archive then records the traced size it holds for.
    """
    graph = gm.graph
    shapes = shape_nodes(graph)
    settled = bool(shapes) or any(_pieces_read_by_index(node) for node in graph.nodes)
    _resolve(graph, shapes)
    _drop_contiguous(graph)
    _split_pieces(graph)
    gm.recompile()
    return settled
