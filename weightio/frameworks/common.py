"""What every framework reader shares: collecting arrays under tensor keys, making the archive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from weightio.format.archive import Archive, tensor_ref
from weightio.spec.dtypes import as_little_endian
from weightio.spec.model import ModelSpec
from weightio.spec.tensors import TensorRef


class TensorCollector:
    """Gathers a reader's arrays under ``<layer>.<param>`` keys and hands back ``TensorRef``s."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, layer: str, param: str, array: np.ndarray) -> TensorRef:
        """Store ``array`` as parameter ``param`` of ``layer`` and return its reference."""
        key = f"{layer}.{param}"
        if key in self.arrays:
            raise ValueError(f"tensor {key!r} collected twice")
        array = as_little_endian(np.asarray(array))
        self.arrays[key] = array
        return tensor_ref(key, array)


def make_archive(spec_data: dict[str, Any], arrays: dict[str, np.ndarray]) -> Archive:
    """Validate ``spec_data`` and pair it with ``arrays``."""
    from weightio.spec import spec_from_data

    spec: ModelSpec = spec_from_data(spec_data)
    return Archive(spec, arrays)


@dataclass(frozen=True)
class NativeTensor:
    """One array as its framework holds it (``inspect --native``)."""

    #: The framework's own name (Keras ``weight.name``: ``kernel``; torch: ``weight``).
    name: str
    #: Where it lives (Keras ``weight.path``: ``lstm/lstm_cell/kernel``; a state-dict key).
    path: str
    shape: tuple[int, ...]
    dtype: str
    #: ``trainable`` or ``buffer``.
    role: str
    #: The framework class that holds it (``Dense``), or None.
    source_class: str | None = None


#: The Keras model classes ``spec.extra["keras"]["model_classes"]`` may name.
KERAS_MODEL_CLASSES = ("Sequential", "Functional")


def recorded_model_classes(archive: Archive) -> dict[str, str]:
    """Which Keras models of ``archive`` were ``Sequential``: the Keras reader's record
    (``spec.extra["keras"]["model_classes"]``, ``""`` for the model, else a nested model's
    ``/`` path), checked as data; anything else in it is ignored. Never used to compute.
    """
    hint = archive.spec.extra.get("keras")
    classes = hint.get("model_classes") if isinstance(hint, dict) else None
    if not isinstance(classes, dict):
        return {}
    return {path: kind for path, kind in classes.items()
            if isinstance(path, str) and kind in KERAS_MODEL_CLASSES}
