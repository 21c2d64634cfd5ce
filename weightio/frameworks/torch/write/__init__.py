"""Spec layers -> PyTorch modules.

``base`` holds the registry ``TORCH_WRITE`` (keyed by spec kind); each family module registers
its kinds into it and this package imports the families from the list below.
"""

from __future__ import annotations

from weightio.frameworks.torch.write import attention, conv, core, merge, norm, ops, recurrent

#: The layer families, each registering its kinds into ``base.TORCH_WRITE``.
FAMILIES = (core, conv, norm, recurrent, merge, attention, ops)
