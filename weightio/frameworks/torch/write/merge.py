"""Graph-operation spec kinds -> PyTorch: computed in the GraphModule, not as modules."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from weightio.errors import UnsupportedLayerError
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import torch_module
from weightio.frameworks.torch.write.attention import attention_module
from weightio.frameworks.torch.write.base import TORCH_WRITE
from weightio.spec.layers import MULTI_INPUT_KINDS
from weightio.spec.model import ModelSpec
from weightio.spec.recurrent import RECURRENT_KINDS

#: Kinds built only inside a GraphModule (tuples out, several tensors in, or indexing).
GRAPH_KINDS = RECURRENT_KINDS | MULTI_INPUT_KINDS | {"last_step", "multi_head_attention"}

AddModule = Callable[[str, Any], str]


def needs_graph(spec: ModelSpec) -> bool:
    """True when even a chain has to be a GraphModule (an nn.Sequential cannot express it)."""
    return any(layer.kind in GRAPH_KINDS for layer in spec.layers)


def _graph_only(layer: Any, archive: Archive) -> list[Any]:
    raise UnsupportedLayerError(
        f"a {layer.kind} is a graph operation, built by graph_value", layer=layer.name
    )


TORCH_WRITE.register(*sorted(MULTI_INPUT_KINDS), "last_step")(_graph_only)


def graph_value(
    layer: Any, archive: Archive, graph: Any, inputs: list[Any], add_module: AddModule
) -> Any:
    """Add the fx nodes computing ``layer`` to ``graph``; return the node of its value."""
    torch = torch_module("building PyTorch modules")
    if layer.kind in RECURRENT_KINDS:
        module = TORCH_WRITE.lookup(layer.kind, layer=layer.name)(layer, archive)[0]
        result = graph.call_module(add_module(layer.name, module), (inputs[0],))
        if layer.return_sequences:
            return graph.call_function(operator.getitem, (result, 0))
        if not layer.bidirectional:
            sequence = graph.call_function(operator.getitem, (result, 0))
            index = (slice(None), -1) if layer.batch_first else -1
            return graph.call_function(operator.getitem, (sequence, index))
        state = graph.call_function(operator.getitem, (result, 1))
        if layer.kind == "lstm":
            state = graph.call_function(operator.getitem, (state, 0))
        last = [graph.call_function(operator.getitem, (state, i)) for i in (-2, -1)]
        return graph.call_function(torch.cat, (last,), {"dim": -1})
    if layer.kind == "multi_head_attention":
        module = attention_module(layer, archive)[0]
        x = inputs[0]
        options: dict[str, Any] = {"need_weights": False}
        if layer.key_padding_mask:  # the spec's 0 = padded is torch's True = ignored
            options["key_padding_mask"] = graph.call_function(operator.eq, (inputs[1], 0))
        result = graph.call_module(add_module(layer.name, module), (x, x, x), options)
        return graph.call_function(operator.getitem, (result, 0))
    if layer.kind == "last_step":
        return graph.call_function(operator.getitem, (inputs[0], (slice(None), -1)))
    if layer.kind == "concatenate":
        return graph.call_function(torch.cat, (list(inputs),), {"dim": layer.axis})
    if layer.kind == "subtract":
        return graph.call_function(operator.sub, (inputs[0], inputs[1]))
    fn = {
        "add": operator.add,
        "average": operator.add,
        "multiply": operator.mul,
        "maximum": torch.maximum,
        "minimum": torch.minimum,
    }[layer.kind]
    value = inputs[0]
    for other in inputs[1:]:
        value = graph.call_function(fn, (value, other))
    if layer.kind == "average":
        value = graph.call_function(operator.truediv, (value, len(inputs)))
    return value
