"""Feed the same inputs to the Keras original, the PyTorch program and the numpy runtime."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

import weightio  # noqa: E402


def main(folder: Path) -> None:
    # Keras through weightio's import, which keeps TensorFlow's start-up lines off the output
    from weightio.optional import require

    keras = require("keras", purpose="comparing outputs")
    import torch

    x = np.random.default_rng(42).standard_normal((5, 10)).astype("float32")
    y_keras = np.asarray(keras.saving.load_model(folder / "regressor.keras")(x))
    program = torch.export.load(str(folder / "regressor.pt2"))
    y_torch = program.module()(torch.from_numpy(x)).detach().numpy()
    y_numpy = weightio.run(weightio.load(folder / "regressor.safetensors"), x)
    print(f"{'keras':>12} {'pytorch':>12} {'numpy':>12}")
    for a, b, c in zip(y_keras[:, 0], y_torch[:, 0], y_numpy[:, 0]):
        print(f"{a:12.6f} {b:12.6f} {c:12.6f}")
    worst = max(np.max(np.abs(y_keras - y_torch)), np.max(np.abs(y_keras - y_numpy)))
    print(f"worst absolute difference: {worst:.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "example-output"))
