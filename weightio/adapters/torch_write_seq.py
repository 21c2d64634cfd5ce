"""PyTorch writers for normalisation, embedding, recurrent and graph-operation kinds.

Registered into ``torch_write.TORCH_WRITE``. Modules are built in the parameters' dtype and
their tensors loaded bit-exact (``load_state_dict`` copies without casting; dtypes agree).
Recurrent modules return tuples and merges read several tensors, so a spec holding either is
built as a ``torch.fx.GraphModule``: ``graph_value`` adds the nodes a user would have written
(``out, _ = self.lstm(x)``, ``out[:, -1]``, ``a + b``, ``torch.cat([a, b], dim)``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from weightio.adapters.torch_common import numpy_to_tensor, torch_dtype_for, torch_module
from weightio.adapters.torch_write import TORCH_WRITE
from weightio.archive import Archive
from weightio.errors import UnsupportedLayerError
from weightio.spec import LayerBase, ModelSpec
from weightio.spec.merge import MULTI_INPUT_KINDS
from weightio.spec.recurrent import RECURRENT_KINDS

#: Kinds built only inside a GraphModule (tuples out, several tensors in, or indexing).
GRAPH_KINDS = RECURRENT_KINDS | MULTI_INPUT_KINDS | {"last_step", "multi_head_attention"}

AddModule = Callable[[str, Any], str]


def needs_graph(spec: ModelSpec) -> bool:
    """True when even a chain has to be a GraphModule (an nn.Sequential cannot express it)."""
    return any(layer.kind in GRAPH_KINDS for layer in spec.layers)


def _nn() -> Any:
    return torch_module("building PyTorch modules").nn


def _load(
    module: Any,
    archive: Archive,
    layer: LayerBase,
    names: dict[str, str],
    fill: dict[str, np.ndarray] | None = None,
) -> Any:
    """Load ``names`` (module attribute -> canonical param) and ``fill`` exact constants."""
    state = {
        attr: numpy_to_tensor(np.asarray(archive.tensors[layer.tensor_refs()[param].key]))
        for attr, param in names.items()
    }
    state.update({attr: numpy_to_tensor(value) for attr, value in (fill or {}).items()})
    missing, unexpected = module.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.endswith("num_batches_tracked")]
    if left or unexpected:
        raise UnsupportedLayerError(
            f"internal: parameters {left or unexpected} do not fit {type(module).__name__}",
            layer=layer.name,
        )
    return module.eval()


def _dtype(archive: Archive, layer: LayerBase) -> Any:
    ref = next(iter(layer.tensor_refs().values()))
    return torch_dtype_for(np.asarray(archive.tensors[ref.key]).dtype)


def _affine_fill(
    layer: Any, archive: Archive, size: tuple[int, ...]
) -> tuple[dict[str, str], dict[str, np.ndarray], bool]:
    """weight/bias present -> loaded; one missing -> exact ones/zeros; both missing -> no affine."""
    names = {p: p for p in ("weight", "bias") if getattr(layer, p) is not None}
    if not names:
        return {}, {}, False
    dtype = np.asarray(archive.tensors[getattr(layer, next(iter(names))).key]).dtype
    fill = {}
    if "weight" not in names:
        fill["weight"] = np.ones(size, dtype=dtype)
    if "bias" not in names:
        fill["bias"] = np.zeros(size, dtype=dtype)
    return names, fill, True


def _channel_axis_one(layer: Any, what: str) -> int:
    """The input rank of a layer normalising axis 1 (refuse any other axis)."""
    rank = layer.input_rank
    if (
        layer.axis == 1
        or (layer.axis == -1 and rank == 2)
        or (rank is not None and layer.axis + rank == 1)
    ):
        return rank or 2
    raise UnsupportedLayerError(
        f"{layer.kind} over axis {layer.axis} of a rank-{rank or '?'} input: PyTorch's {what} "
        "normalises axis 1 (channels first). A channels-last source needs its layout converted "
        "to channels-first first",
        layer=layer.name,
    )


@TORCH_WRITE.register("batch_norm")
def _batch_norm(layer: Any, archive: Archive) -> list[Any]:
    """BatchNorm1d (rank 2/3), 2d (rank 4) or 3d (rank 5) on axis 1, eps as stored."""
    rank = _channel_axis_one(layer, "BatchNorm")
    cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}.get(rank)
    if cls is None:
        raise UnsupportedLayerError(
            f"batch_norm on a rank-{rank} input has no PyTorch module", layer=layer.name
        )
    names, fill, affine = _affine_fill(layer, archive, (layer.num_features,))
    module = getattr(_nn(), cls)(
        layer.num_features,
        eps=layer.eps,
        momentum=layer.momentum if layer.momentum is not None else 0.1,
        affine=affine,
        dtype=_dtype(archive, layer),
    )
    names.update(running_mean="running_mean", running_var="running_var")
    return [_load(module, archive, layer, names, fill)]


@TORCH_WRITE.register("layer_norm")
def _layer_norm(layer: Any, archive: Archive) -> list[Any]:
    """LayerNorm(normalized_shape, eps, elementwise_affine, bias)."""
    names, fill, affine = _affine_fill(layer, archive, tuple(layer.normalized_shape))
    kwargs: dict[str, Any] = {"eps": layer.eps, "elementwise_affine": affine}
    if affine:
        kwargs["dtype"] = _dtype(archive, layer)
    if affine and layer.bias is None:
        kwargs["bias"], fill = False, {k: v for k, v in fill.items() if k != "bias"}
    module = _nn().LayerNorm(list(layer.normalized_shape), **kwargs)
    return [_load(module, archive, layer, names, fill)]


@TORCH_WRITE.register("group_norm")
def _group_norm(layer: Any, archive: Archive) -> list[Any]:
    """GroupNorm(num_groups, num_channels, eps, affine) on axis 1."""
    _channel_axis_one(layer, "GroupNorm")
    names, fill, affine = _affine_fill(layer, archive, (layer.num_channels,))
    kwargs = {"dtype": _dtype(archive, layer)} if affine else {}
    module = _nn().GroupNorm(
        layer.num_groups, layer.num_channels, eps=layer.eps, affine=affine, **kwargs
    )
    return [_load(module, archive, layer, names, fill)]


@TORCH_WRITE.register("normalization")
def _normalization(layer: Any, archive: Archive) -> list[Any]:
    """Keras Normalization as ``BatchNorm1d(affine=False, eps=0)`` with ``running_var =
    max(variance, eps**2)``: ``sqrt(max(v, e**2)) == max(sqrt(v), e)``, the same floor.
    """
    rank = _channel_axis_one(layer, "BatchNorm1d")
    if rank > 3:
        raise UnsupportedLayerError(
            "normalization of rank > 3 inputs has no PyTorch mapping yet", layer=layer.name
        )
    variance = np.asarray(archive.tensors[layer.variance.key])
    floored = np.maximum(variance, np.asarray(layer.eps**2, dtype=variance.dtype))
    module = _nn().BatchNorm1d(
        layer.num_features, eps=0.0, affine=False, dtype=_dtype(archive, layer)
    )
    return [_load(module, archive, layer, {"running_mean": "mean"}, {"running_var": floored})]


@TORCH_WRITE.register("embedding")
def _embedding(layer: Any, archive: Archive) -> list[Any]:
    """Embedding(num_embeddings, embedding_dim, padding_idx)."""
    module = _nn().Embedding(
        layer.num_embeddings,
        layer.embedding_dim,
        padding_idx=layer.padding_idx,
        dtype=_dtype(archive, layer),
    )
    return [_load(module, archive, layer, {"weight": "weight"})]


_RNN_CLASS = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


@TORCH_WRITE.register("simple_rnn", "lstm", "gru")
def _recurrent(layer: Any, archive: Archive) -> list[Any]:
    """nn.RNN / nn.LSTM / nn.GRU with every setting explicit; parameters by their torch names."""
    kwargs: dict[str, Any] = {}
    if layer.kind == "simple_rnn":
        kwargs["nonlinearity"] = layer.activation
    module = getattr(_nn(), _RNN_CLASS[layer.kind])(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=layer.use_bias,
        batch_first=layer.batch_first,
        bidirectional=layer.bidirectional,
        dtype=_dtype(archive, layer),
        **kwargs,
    )
    return [_load(module, archive, layer, {n: n for n in layer.tensor_refs()})]


def _graph_only(layer: Any, archive: Archive) -> list[Any]:
    raise UnsupportedLayerError(
        f"a {layer.kind} is a graph operation, built by graph_value", layer=layer.name
    )


TORCH_WRITE.register(*sorted(MULTI_INPUT_KINDS), "last_step")(_graph_only)


@TORCH_WRITE.register("multi_head_attention")
def _attention(layer: Any, archive: Archive) -> list[Any]:
    """nn.MultiheadAttention(embed_dim, num_heads, bias, batch_first=True), packed projections."""
    module = _nn().MultiheadAttention(
        layer.embed_dim,
        layer.num_heads,
        bias=layer.use_bias,
        batch_first=True,
        dtype=_dtype(archive, layer),
    )
    names = {"in_proj_weight": "in_proj_weight", "out_proj.weight": "out_proj_weight"}
    if layer.use_bias:
        names.update({"in_proj_bias": "in_proj_bias", "out_proj.bias": "out_proj_bias"})
    return [_load(module, archive, layer, names)]


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
        module = _attention(layer, archive)[0]
        x = inputs[0]
        result = graph.call_module(
            add_module(layer.name, module), (x, x, x), {"need_weights": False}
        )
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
