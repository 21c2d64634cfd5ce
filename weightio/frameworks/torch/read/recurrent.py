"""PyTorch embedding and recurrent modules -> spec layers."""

from __future__ import annotations

from typing import Any

from weightio.frameworks.torch.read.base import (
    TORCH_READ,
    ReadContext,
)
from weightio.spec.base import LayerBase
from weightio.spec.recurrent import (
    EmbeddingLayer,
    GRULayer,
    LSTMLayer,
    SimpleRNNLayer,
)

# -- embedding and recurrent ----------------------------------------------------------------


@TORCH_READ.register("torch.nn.Embedding", produces=("embedding",))
def _embedding(module: Any, ctx: ReadContext) -> LayerBase:
    """Weight [num, dim]; padding_idx only shapes training and is kept as metadata."""
    if module.max_norm is not None:
        raise ctx.refuse(
            f"max_norm={module.max_norm} renormalises rows of the weight during forward; "
            "weightio converts embeddings without max_norm"
        )
    return EmbeddingLayer(
        **ctx.base(),
        num_embeddings=int(module.num_embeddings),
        embedding_dim=int(module.embedding_dim),
        padding_idx=None if module.padding_idx is None else int(module.padding_idx),
        weight=ctx.tensor("weight", module.weight),
    )


_RNN = {"torch.nn.RNN": SimpleRNNLayer, "torch.nn.LSTM": LSTMLayer, "torch.nn.GRU": GRULayer}


@TORCH_READ.register(*_RNN, produces=("simple_rnn", "lstm", "gru"))
def _recurrent(module: Any, ctx: ReadContext) -> LayerBase:
    """Parameters under their torch names; the layer's value is the output sequence."""
    if getattr(module, "proj_size", 0):
        raise ctx.refuse(f"proj_size={module.proj_size} (projected LSTM) has no Keras equivalent")
    extra: dict[str, Any] = {}
    if ctx.source == "torch.nn.RNN":
        extra["activation"] = module.nonlinearity
    weights = {name: ctx.tensor(name, value) for name, value in module.named_parameters()}
    return _RNN[ctx.source](
        **ctx.base(),
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        batch_first=bool(module.batch_first),
        return_sequences=True,
        use_bias=bool(module.bias),
        weights=weights,
        **extra,
    )
