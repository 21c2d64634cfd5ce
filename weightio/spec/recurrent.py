"""Sequence layer kinds: embeddings and recurrent layers (SimpleRNN, LSTM, GRU).

Recurrent parameters use PyTorch's state-dict names and layouts, one set per stacked layer and
direction: ``weight_ih_l{k}[_reverse]`` ``[gates*hidden, in]``, ``weight_hh_l{k}[_reverse]``
``[gates*hidden, hidden]``, ``bias_ih_l{k}``, ``bias_hh_l{k}``. Gate orders are PyTorch's:
LSTM ``i, f, g, o``; GRU ``r, z, n`` with the reset gate applied after the recurrent matmul
(Keras ``reset_after=True``). Both biases are kept, so a Keras single bias is ``bias_ih`` with
``bias_hh = 0`` exactly.

Inputs are ``(N, T, F)`` when ``batch_first`` (Keras always; torch ``batch_first=True``), else
``(T, N, F)``. With ``return_sequences`` the output is every step ``(N, T, D*H)`` (``(T, N, D*H)``
time-first); without, it is Keras's: each direction's final hidden state, concatenated
``(N, D*H)`` — for one direction exactly the last step of the sequence.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from weightio.spec.base import LayerBase, Shape, check_param_shape
from weightio.spec.tensors import TensorRef


class EmbeddingLayer(LayerBase):
    """``y = weight[x]`` for integer ``x`` in ``[0, num_embeddings)``; adds a trailing axis."""

    kind: Literal["embedding"] = "embedding"
    num_embeddings: int = Field(gt=0)
    embedding_dim: int = Field(gt=0)
    padding_idx: int | None = Field(
        default=None, description="torch padding_idx: affects training only, kept as metadata."
    )
    weight: TensorRef

    tensor_fields: ClassVar[tuple[str, ...]] = ("weight",)

    @model_validator(mode="after")
    def _shapes_agree(self) -> EmbeddingLayer:
        check_param_shape(self.weight, (self.num_embeddings, self.embedding_dim),
                          what="embedding weight", layout="[num_embeddings, embedding_dim]")
        return self

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The indices' rank plus the embedding axis."""
        rank = input_ranks[0] if input_ranks else None
        return None if rank is None else rank + 1

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """A trailing axis of ``embedding_dim``."""
        return (*input_shapes[0], self.embedding_dim) if input_shapes else None

    def formula(self) -> str:
        """A row per index."""
        return "weight[x]   (one row per index)"

    def detail(self) -> str:
        """Vocabulary size and width."""
        return f"{self.num_embeddings}x{self.embedding_dim}"


#: Gates per kind: how many hidden-size blocks ``weight_ih`` stacks.
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


class RecurrentBase(LayerBase):
    """Fields shared by the recurrent kinds; parameters live in ``weights`` by torch name."""

    input_size: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(default=1, gt=0)
    bidirectional: bool = False
    batch_first: bool = True
    return_sequences: bool = False
    use_bias: bool = True
    weights: dict[str, TensorRef]

    def tensor_refs(self) -> dict[str, TensorRef]:
        """Parameters in canonical order (``parameter_names``)."""
        return {name: self.weights[name] for name in self.parameter_names() if name in self.weights}

    @property
    def directions(self) -> int:
        """1, or 2 when bidirectional."""
        return 2 if self.bidirectional else 1

    def parameter_names(self) -> list[str]:
        """Every parameter name this layer must have, in torch's order."""
        names = []
        for k in range(self.num_layers):
            for suffix in ("", "_reverse")[: self.directions]:
                names += [f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}"]
                if self.use_bias:
                    names += [f"bias_ih_l{k}{suffix}", f"bias_hh_l{k}{suffix}"]
        return names

    def expected_shape(self, name: str) -> tuple[int, ...]:
        """The canonical shape of parameter ``name``."""
        rows = GATES[self.kind] * self.hidden_size
        layer = int(name.split("_l")[1].split("_")[0])
        if name.startswith("weight_ih"):
            return (rows, self.input_size if layer == 0 else self.hidden_size * self.directions)
        if name.startswith("weight_hh"):
            return (rows, self.hidden_size)
        return (rows,)

    @model_validator(mode="after")
    def _parameters_agree(self) -> RecurrentBase:
        names = self.parameter_names()
        problems = []
        missing = [n for n in names if n not in self.weights]
        extra = [n for n in self.weights if n not in names]
        if missing:
            problems.append(f"{self.kind} lacks parameters {missing}")
        if extra:
            problems.append(f"{self.kind} has unexpected parameters {extra}")
        for name in names:
            ref = self.weights.get(name)
            if ref is not None and tuple(ref.shape) != self.expected_shape(name):
                problems.append(
                    f"{self.kind} {name} shape {list(ref.shape)} disagrees with "
                    f"{list(self.expected_shape(name))}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """A sequence ``(N, T, H)`` with ``return_sequences``, else ``(N, H)``."""
        return 3 if self.return_sequences else 2

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """``[T, H * directions]`` with ``return_sequences``, else ``[H * directions]``."""
        if not input_shapes or len(input_shapes[0]) != 2 or not self.batch_first:
            return None
        width = self.hidden_size * self.directions
        return (input_shapes[0][0], width) if self.return_sequences else (width,)

    def formula(self) -> str:
        """The cell over time, direction, stacking and what is returned."""
        cell = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}[self.kind]
        direction = "both directions, concatenated" if self.bidirectional else "forward"
        steps = "every step's h" if self.return_sequences else "the last step's h"
        stack = f"{self.num_layers} stacked layers, " if self.num_layers > 1 else ""
        return f"{cell} over x[:, t] ({stack}{direction}); returns {steps}"

    def detail(self) -> str:
        """Sizes, stacking, direction, what is returned."""
        text = f"in={self.input_size}, hidden={self.hidden_size}"
        if self.num_layers > 1:
            text += f", layers={self.num_layers}"
        if self.bidirectional:
            text += ", bidirectional"
        return text + f", return_sequences={self.return_sequences}"


class SimpleRNNLayer(RecurrentBase):
    """``h_t = activation(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (Keras SimpleRNN, nn.RNN)."""

    kind: Literal["simple_rnn"] = "simple_rnn"
    activation: Literal["tanh", "relu"] = "tanh"


class LSTMLayer(RecurrentBase):
    """LSTM, gates ``i, f, g, o`` (sigmoid, sigmoid, tanh, sigmoid), cell output through tanh."""

    kind: Literal["lstm"] = "lstm"


class GRULayer(RecurrentBase):
    """GRU, gates ``r, z, n``; ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h = (1 - z) * n + z * h_prev`` (Keras ``reset_after=True``, PyTorch nn.GRU).
    """

    kind: Literal["gru"] = "gru"


#: This family's layer kinds, joined into ``weightio.spec.layers.Layer``.
LAYERS = (EmbeddingLayer, SimpleRNNLayer, LSTMLayer, GRULayer)
RECURRENT_KINDS = frozenset({"simple_rnn", "lstm", "gru"})
