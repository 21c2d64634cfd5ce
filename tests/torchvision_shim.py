"""Make torchvision importable against the CPU torch build, for the model-zoo tests.

PyPI's torchvision 0.28.0 (the release pinned to torch 2.13.0) is a CUDA build. Its compiled
operators do not load against the CPU torch, and ``torchvision/_meta_registrations.py`` then
fails at import with ``operator torchvision::nms does not exist``: that module registers fake
(meta) kernels for the compiled detection operators (nms, roi_align…). The classifiers the tests
build (resnet, mobilenet, efficientnet, densenet, shufflenet, convnext) are pure Python and never
call those operators, so an empty stand-in for that one module lets torchvision import; the
detection operators stay unusable, which these tests do not need.

``import_torchvision()`` is the one place this happens. It leaves a working torchvision alone (a
CPU build, another platform) and installs the stand-in only when the real import fails with that
error.
"""

from __future__ import annotations

import sys
import types
from typing import Any

_META = "torchvision._meta_registrations"


def _forget_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> Any:
    """``torchvision``, importing it with the stand-in if its compiled ops do not load.

    Returns None when torchvision is not installed or still fails to import.
    """
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        import torchvision
    except ImportError:
        return None
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
        _forget_torchvision()
        sys.modules[_META] = types.ModuleType(_META, "stand-in: see tests/torchvision_shim.py")
        try:
            import torchvision
        except (ImportError, RuntimeError):
            _forget_torchvision()
            return None
    return torchvision
