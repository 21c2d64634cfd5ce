"""Weights-only archives: a bare state dict (names -> arrays) with no architecture.

Parameters are grouped into ``opaque`` layers by the name before their last dot (``fc1.weight``
and ``fc1.bias`` -> layer ``fc1``), and keep their original names, so the archive's tensor keys
are exactly the state dict's keys. A key that is also the prefix of another (``x`` and ``x.x``,
``a.b`` and ``a.b.c``) is refused: grouping would put two tensors under one name (one silently
replacing the other), and no module can hold a parameter and a submodule of one name, so such a
dict is not a state dict any model can load. Nothing is guessed about what a layer computes: such an archive
is good for archiving, inspecting, diffing and ``load_into``, and is refused by ``to_keras``,
``to_torch`` and ``run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from pydantic import ValidationError

from weightio.errors import SpecValidationError
from weightio.format.archive import Archive, tensor_ref
from weightio.spec.core import OpaqueLayer
from weightio.spec.dtypes import as_little_endian
from weightio.spec.model import ModelSpec, Provenance


def split_key(key: str) -> tuple[str, str]:
    """``'encoder.fc1.weight'`` -> ``('encoder.fc1', 'weight')``; a dotless key is its own layer."""
    layer, dot, param = key.rpartition(".")
    return (layer, param) if dot and layer else (key, key)


def refuse_colliding_keys(keys: Iterable[str]) -> None:
    """Refuse a key that is also a dotted prefix of another key (``x`` and ``x.x``)."""
    ordered = list(keys)
    names = set(ordered)
    for key in ordered:
        parts = key.split(".")
        for end in range(1, len(parts)):
            prefix = ".".join(parts[:end])
            if prefix in names:
                raise SpecValidationError(
                    f"the state dict holds both {prefix!r} and {key!r}: {prefix!r} is a tensor and "
                    "the prefix of another, so grouping tensors into layers would put two under "
                    "one name and keep only one (no module can hold a parameter and a submodule "
                    "of one name). Rename one of the keys before reading the state dict",
                    tensor=prefix,
                )


def archive_from_state_dict(
    arrays: Mapping[str, np.ndarray],
    *,
    name: str,
    provenance: Provenance,
    source_class: str | None = None,
) -> Archive:
    """Build a weights-only archive whose tensor keys are the state dict's keys, in order.

    Raises:
        SpecValidationError: a key is also the prefix of another key (both named), or a key
            cannot name a layer.
    """
    refuse_colliding_keys(arrays)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        layer, param = split_key(key)
        groups.setdefault(layer, {})[param] = as_little_endian(np.asarray(array))
    layers = []
    stored: dict[str, np.ndarray] = {}
    for layer_name, params in groups.items():
        refs = {}
        for param, array in params.items():
            key = param if layer_name == param else f"{layer_name}.{param}"
            refs[param] = tensor_ref(key, array)
            stored[key] = array
        try:
            layers.append(
                OpaqueLayer(name=layer_name, tensors=refs, source_class=source_class, config={})
            )
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors(include_url=False))[:300]
            raise SpecValidationError(
                f"the state dict key(s) {sorted(refs)!r} under {layer_name!r} cannot name a "
                f"layer ({problems}); layer names are non-empty, start with no whitespace and "
                "hold no '/' or '\\'. Rename the keys before saving the state dict",
                layer=layer_name,
            ) from None
    try:
        spec = ModelSpec(name=name, provenance=provenance, weights_only=True, layers=layers)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False)[:5])
        raise SpecValidationError(f"the state dict does not form a valid archive: {problems}") from None
    return Archive(spec, stored)
