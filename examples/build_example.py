"""Build the bundled example: the classic Keras regressor, trained briefly, saved as .keras.

10 inputs -> Dense 64 relu -> Dense 32 relu -> Dense 1, fitted to a fixed random linear target
plus a bend, so the weights are real trained weights (no download, seeded, a few seconds).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def build(path: Path) -> Path:
    # Keras through weightio's import, which keeps TensorFlow's start-up lines off the output
    from weightio.optional import require

    keras = require("keras", purpose="building the example")

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 10)).astype("float32")
    y = (x @ rng.standard_normal(10) + np.sin(x[:, 0]) + 0.5).astype("float32")[:, None]
    model = keras.Sequential(
        [
            keras.Input(shape=(10,), name="features"),
            keras.layers.Dense(64, activation="relu", name="hidden_1"),
            keras.layers.Dense(32, activation="relu", name="hidden_2"),
            keras.layers.Dense(1, name="prediction"),
        ],
        name="regressor",
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    print(f"built {path}: Keras regressor 10 -> 64 -> 32 -> 1, trained 5 epochs")
    return path


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "example-output/regressor.keras"))
