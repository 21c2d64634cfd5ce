"""Embedding and recurrent spec kinds -> PyTorch modules."""

from __future__ import annotations

from typing import Any

from weightio.format.archive import Archive
from weightio.frameworks.torch.write.base import TORCH_WRITE, layer_dtype, load_parameters, torch_nn


@TORCH_WRITE.register("embedding")
def _embedding(layer: Any, archive: Archive) -> list[Any]:
    """Embedding(num_embeddings, embedding_dim, padding_idx)."""
    module = torch_nn().Embedding(
        layer.num_embeddings,
        layer.embedding_dim,
        padding_idx=layer.padding_idx,
        dtype=layer_dtype(archive, layer),
    )
    return [load_parameters(module, archive, layer, {"weight": "weight"})]


_RNN_CLASS = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


@TORCH_WRITE.register("simple_rnn", "lstm", "gru")
def _recurrent(layer: Any, archive: Archive) -> list[Any]:
    """nn.RNN / nn.LSTM / nn.GRU with every setting explicit; parameters by their torch names."""
    kwargs: dict[str, Any] = {}
    if layer.kind == "simple_rnn":
        kwargs["nonlinearity"] = layer.activation
    module = getattr(torch_nn(), _RNN_CLASS[layer.kind])(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=layer.use_bias,
        batch_first=layer.batch_first,
        bidirectional=layer.bidirectional,
        dtype=layer_dtype(archive, layer),
        **kwargs,
    )
    return [load_parameters(module, archive, layer, {n: n for n in layer.tensor_refs()})]
