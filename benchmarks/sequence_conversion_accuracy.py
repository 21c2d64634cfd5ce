"""How closely converted sequence models agree with their source: verified ``convert`` runs.

Prints one table row per model: the verification record's worst absolute difference between the
source and each witness (the numpy float64 runtime, the converted model), with the output scale
the tolerance is measured against. Weights are random (scale 0.2, biases non-zero, torch LSTMs
with two non-zero biases, so the summed Keras bias is exercised). Run:
``python benchmarks/sequence_conversion_accuracy.py``.

Long tanh recurrences with large weights are chaotic: float32 rounding grows with the number of
steps in *every* framework (Keras against the float64 runtime too), so such a model can fail
verification honestly: with scale 0.5, SimpleRNN(32) over 30 steps differs by ~1e-4.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import weightio  # noqa: E402

L = keras.layers
RNG = np.random.default_rng(0)
SCALE = 0.2


def randomize_keras(model: keras.Model) -> keras.Model:
    for layer in model.layers:
        for var in layer.weights:
            value = RNG.standard_normal(tuple(var.shape)) * SCALE
            var.assign((np.abs(value) + 0.5 if "variance" in var.path else value).astype("float32"))
    return model


def randomize_torch(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point():
                value = torch.randn(tensor.shape) * SCALE
                tensor.copy_(value.abs() + 0.5 if "var" in name else value)
    return module.eval()


class TorchText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(1000, 32)
        self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True)
        self.fc = nn.Linear(64, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return self.fc(out[:, -1])


class TorchBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x + self.fc(x))
        z, _ = self.attn(y, y, y)
        return torch.cat([z, y], dim=-1)


def cases() -> dict[str, tuple[object, str, dict]]:
    found: dict[str, tuple[object, str, dict]] = {}
    inp = keras.Input((20,), dtype="int32")
    out = L.Dense(5)(L.LSTM(64)(L.Embedding(1000, 32)(inp)))
    found["Keras Embedding(1000,32) -> LSTM(64) -> Dense(5) => .pt"] = (
        randomize_keras(keras.Model(inp, out)), "text.pt", {})
    for name in ("LSTM", "GRU", "SimpleRNN"):
        inp = keras.Input((30, 16))
        x = getattr(L, name)(32, return_sequences=True)(inp)
        x = L.Bidirectional(getattr(L, name)(16))(x)
        found[f"Keras {name}(32) -> Bidirectional({name}(16)), T=30 => .pt"] = (
            randomize_keras(keras.Model(inp, x)), f"{name}.pt", {})
    found["torch Embedding -> LSTM(2 layers) -> Linear => .keras"] = (
        randomize_torch(TorchText()), "text.keras",
        {"example_input": torch.zeros(2, 20, dtype=torch.long)})
    found["torch residual + LayerNorm + MHA + cat, T=10 => .keras"] = (
        randomize_torch(TorchBlock()), "block.keras", {"example_input": torch.zeros(2, 10, 16)})
    return found


def main() -> None:
    folder = tempfile.mkdtemp()
    print("| model | verified | worst abs difference per witness pair (output scale) |")
    print("| --- | --- | --- |")
    for label, (source, file, options) in cases().items():
        result = weightio.convert(source, os.path.join(folder, file), samples=16, **options)
        figures = "; ".join(
            f"{c.witnesses[0]} vs {c.witnesses[1]}: {c.worst_abs:.2e} ({c.scale:.2g})"
            for c in result.verification.checks
        )
        print(f"| {label} | {'pass' if result.verification.passed else 'FAIL'} | {figures} |")


if __name__ == "__main__":
    main()
