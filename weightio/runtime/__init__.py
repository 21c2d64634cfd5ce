"""The numpy reference runtime: a model's outputs computed from the archive alone.

It is the third witness in verification, so it favours being obviously right over being fast:
every layer is a few lines of numpy following docs/conventions.md, in float64. ``base`` holds the
registry; each family module (``core``, ``conv``, ``norm``, ``recurrent``, ``merge``,
``attention``, ``ops``) registers its kinds into it, and this package imports the families from the list
below, so the registry is complete whichever module is imported first.
"""

from __future__ import annotations

from weightio.runtime import attention, conv, core, merge, norm, ops, recurrent
from weightio.runtime.forward import forward, run

#: The layer families, each registering its kinds into ``weightio.runtime.base.RUNTIME``.
FAMILIES = (core, conv, norm, recurrent, merge, attention, ops)

__all__ = ["FAMILIES", "forward", "run"]
