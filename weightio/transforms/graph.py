"""Surgery on a spec's wiring, shared by the transforms: who reads whom, and removing a layer.

Transforms edit a spec as JSON data (``spec.model_dump(mode="json")``). ``Wiring`` holds every
layer's inputs made explicit, so a layer can be removed (its readers then read its input) or
its name taken over by another, and writes them back in the spec's own style: ``inputs`` stays
``None`` wherever the chain default says the same thing.
"""

from __future__ import annotations

from typing import Any

from weightio.spec.model import ModelSpec


class Wiring:
    """The layers of ``spec`` as data, with explicit inputs, editable in place."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.data: dict[str, Any] = spec.model_dump(mode="json")
        self.inputs: list[list[str]] = [spec.layer_inputs(i) for i in range(len(spec.layers))]
        self.removed: set[int] = set()

    def index(self, name: str) -> int | None:
        """The index of the live layer called ``name``."""
        for i, layer in enumerate(self.data["layers"]):
            if layer["name"] == name and i not in self.removed:
                return i
        return None

    def readers(self, name: str) -> list[int]:
        """Indices of the live layers reading ``name``."""
        return [i for i, sources in enumerate(self.inputs) if i not in self.removed and name in sources]

    def is_output(self, name: str) -> bool:
        """Whether a model output is ``name``'s value."""
        return any(out["layer"] == name for out in self.data["outputs"])

    def remove(self, index: int, *, replacement: str) -> None:
        """Drop ``layers[index]``; whatever read it (layers, outputs) reads ``replacement``."""
        name = self.data["layers"][index]["name"]
        self.removed.add(index)
        for i, sources in enumerate(self.inputs):
            self.inputs[i] = [replacement if s == name else s for s in sources]
        for out in self.data["outputs"]:
            if out["layer"] == name:
                out["layer"] = replacement

    def finish(self) -> dict[str, Any]:
        """The spec data with the removed layers gone and the inputs in the chain style."""
        layers = []
        previous = self.data["inputs"][0]["name"] if self.data["inputs"] else None
        for i, layer in enumerate(self.data["layers"]):
            if i in self.removed:
                continue
            sources = self.inputs[i]
            chain = previous is not None and sources == [previous]
            layer = dict(layer, inputs=None if chain else list(sources))
            layers.append(layer)
            previous = layer["name"]
        self.data["layers"] = layers
        return self.data


def free_key(taken: set[str], wanted: str) -> str:
    """``wanted`` if no tensor uses that key yet, else ``wanted`` with a numbered suffix."""
    key, n = wanted, 1
    while key in taken:
        key, n = f"{wanted}_{n}", n + 1
    taken.add(key)
    return key
