"""The battery's one registry (every item module registers its generators here, in file order)
and the small valid archive items start from.

``generate.py`` imports the item modules after its own items, so ids keep the order of the
RELIABILITY.md list; each generator takes the item's folder and returns its manifest entry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Generator = Callable[[Path], dict[str, Any]]

ITEMS: list[tuple[str, Generator]] = []
MAL = ["MalformedFileError"]


def item(name: str) -> Callable[[Generator], Generator]:
    """Register the decorated generator as battery item ``name`` (the test id)."""
    def register(fn: Generator) -> Generator:
        if any(existing == name for existing, _ in ITEMS):
            raise ValueError(f"battery item {name!r} registered twice")
        ITEMS.append((name, fn))
        return fn

    return register


def dense_archive(path: Path, weight: Any = None, *, name: str = "tiny") -> Path:
    """Write a real weightio archive of one 4->3 dense layer (``weight`` replaces the seeded one)."""
    import numpy as np

    from weightio.format.archive import Archive, tensor_ref
    from weightio.format.store import save
    from weightio.spec.core import DenseLayer
    from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance

    rng = np.random.default_rng(7)
    w = rng.standard_normal((3, 4)).astype("f4") if weight is None else weight
    b = rng.standard_normal(3).astype("f4")
    layer = DenseLayer(name="fc", units=3, in_features=4, weight=tensor_ref("fc.weight", w),
                       bias=tensor_ref("fc.bias", b))
    spec = ModelSpec(name=name, provenance=Provenance(source_framework="weightio",
                     weightio_version="battery", created_at="now"),
                     inputs=[InputSpec(name="x", shape=(4,))], layers=[layer],
                     outputs=[OutputSpec(name="y", layer="fc")])
    save(Archive(spec, {"fc.weight": w, "fc.bias": b}), path)
    return path
