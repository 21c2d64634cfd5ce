"""A pytest plugin comparing the two PyTorch tracers on every module a test reads.

Run a test file with ``-p scripts.compare_tracers`` and ``WEIGHTIO_TRACER_DIFF=out.jsonl``:
each ``read_module`` call (``weightio.read`` of a live ``nn.Module``) also reads the module with
``tracer="fx"`` and ``tracer="export-only"``, and one JSON line records the module class, whether
each path read it, and the first differences of their spec JSON (provenance aside, which names
the tracer). The test itself gets what the default reader gives, so it runs unchanged.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from weightio.frameworks.torch.read import export, trace

_ORIGINAL = export.read_module
_DEPTH = [0]


def _spec(archive: Any) -> dict[str, Any]:
    data = json.loads(archive.spec.model_dump_json())
    data.pop("provenance", None)
    return data


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"[:300]]


def _read(module: Any, options: dict[str, Any], tracer: str) -> tuple[Any, str | None, float]:
    start = time.process_time()
    try:
        return _ORIGINAL(module, **options, tracer=tracer), None, time.process_time() - start
    except Exception as exc:  # recorded, not raised: the comparison is the point
        return None, f"{type(exc).__name__}: {str(exc)[:300]}", time.process_time() - start


def _compare(module: Any, *, _return: str | None = None, **options: Any) -> Any:
    if _DEPTH[0] or "tracer" in options:
        return _ORIGINAL(module, **options)
    _DEPTH[0] += 1
    try:
        fx, fx_error, fx_time = _read(module, options, "fx")
        ex, ex_error, ex_time = _read(module, options, "export-only")
        record = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
            "module": type(module).__qualname__, "fx_error": fx_error, "export_error": ex_error,
            "fx_cpu": round(fx_time, 3), "export_cpu": round(ex_time, 3),
            "diff": _diff(_spec(fx), _spec(ex))[:8] if fx is not None and ex is not None else None,
        }
        target = os.environ.get("WEIGHTIO_TRACER_DIFF")
        if target:  # unset: nothing written (a test's subprocess inherits no record file)
            with open(target, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    finally:
        _DEPTH[0] -= 1
    return _ORIGINAL(module, **options) if _return is None else _ORIGINAL(
        module, **options, tracer=_return)


def _compare_fx(module: Any, **options: Any) -> Any:
    """A test's direct ``read_torch_module`` call: compared, then read by fx as the test asks."""
    if set(options) - {"example_input", "source_file"}:
        return trace.read_torch_module(module, **options)
    return _compare(module, _return="fx", **options)


export.read_module = _compare


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if getattr(module, "read_torch_module", None) is trace.read_torch_module:
            module.read_torch_module = _compare_fx
