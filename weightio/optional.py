"""Optional dependencies, imported on first use: a missing one is one line naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from weightio.errors import MissingFrameworkError

_EXTRAS = {
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "keras",
    "sklearn": "sklearn",
    "skops": "sklearn",
    "matplotlib": "plot",
}


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise one clear line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module.split(".")[0], "all")
        raise MissingFrameworkError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed ({exc}); "
            f"install it with: pip install 'weightio[{extra}]'"
        ) from None
