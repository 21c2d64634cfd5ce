"""weightio: a framework-neutral archive for model weights, with verified converters.

Public API::

    archive = weightio.read(model_or_path)          # Keras, PyTorch, state dicts, files
    weightio.save(archive, "model.safetensors")     # one standard safetensors file
    archive = weightio.load("model.safetensors")    # header now, tensors memory-mapped
    y = weightio.run(archive, x)                    # numpy reference forward pass
    model = weightio.to_torch(archive)              # or to_keras(archive), to_sklearn(archive)
    weightio.load_into(archive, existing_model)
    weightio.convert(src, "model.pt2")              # read, build, verify outputs, write
    report = weightio.diff(a, b)                    # layer-by-layer comparison -> DiffReport
    weightio.inspect(src, native=True)              # layers, parameters (in Keras' own names)
    print(weightio.explain(archive, x))             # a forward pass written out, layer by layer
    result = weightio.cast(archive, "float16")      # float weights only; overflow refused
    result = weightio.fold(archive)                 # batch norm folded; outputs measured
    result = weightio.prune(archive, 0.5)           # or structured=True: a smaller model
    result = weightio.quantize(archive, "int8")     # int8/float8 weights, stored encoded
    print(weightio.importance(archive).table())     # the first layer's inputs, ranked

Attributes are imported on first use (PEP 562), so ``import weightio`` and ``weightio --help``
load no framework and stay fast; each adapter imports its framework only when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from weightio.version import __version__

_LAZY = {
    "Archive": "weightio.format.archive",
    "save": "weightio.format.store",
    "load": "weightio.format.store",
    "read": "weightio.verbs.read",
    "run": "weightio.runtime",
    "convert": "weightio.verbs.convert",
    "diff": "weightio.verbs.diff",
    "DiffReport": "weightio.analysis.diff",
    "explain": "weightio.verbs.explain",
    "inspect": "weightio.verbs.inspect",
    "cast": "weightio.verbs.cast",
    "CastResult": "weightio.verbs.cast",
    "fold": "weightio.verbs.transform",
    "prune": "weightio.verbs.transform",
    "quantize": "weightio.verbs.transform",
    "weight_norm": "weightio.verbs.transform",
    "importance": "weightio.verbs.transform",
    "Importance": "weightio.verbs.transform",
    "TransformResult": "weightio.verbs.transform",
    "Explanation": "weightio.analysis.explain",
    "ConversionResult": "weightio.verbs.convert",
    "to_keras": "weightio.verbs.write",
    "to_torch": "weightio.verbs.write",
    "to_sklearn": "weightio.verbs.write",
    "load_into": "weightio.verbs.write",
    "LoadReport": "weightio.frameworks.pairing",
    "verify": "weightio.verbs.write",
    "ModelSpec": "weightio.spec",
    "errors": "weightio.errors",
    "batch": "weightio.batch",
    "spec": "weightio.spec",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # pragma: no cover
    from weightio import errors, spec
    from weightio.analysis.diff import DiffReport
    from weightio.analysis.explain import Explanation
    from weightio.format.archive import Archive
    from weightio.format.store import load, save
    from weightio.frameworks.pairing import LoadReport
    from weightio.runtime.forward import run
    from weightio.spec.model import ModelSpec
    from weightio.verbs.cast import CastResult, cast
    from weightio.verbs.convert import ConversionResult, convert
    from weightio.verbs.diff import diff
    from weightio.verbs.explain import explain
    from weightio.verbs.inspect import inspect
    from weightio.verbs.read import read
    from weightio.verbs.transform import (
        Importance,
        TransformResult,
        fold,
        importance,
        prune,
        quantize,
        weight_norm,
    )
    from weightio.verbs.write import load_into, to_keras, to_sklearn, to_torch, verify


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'weightio' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"weightio.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
