"""PyTorch modules, functions and methods -> spec layers.

``base`` holds the registry ``TORCH_READ`` (keyed by module class, function or method); each
family module registers into it and this package imports the families from the list below.
"""

from __future__ import annotations

from weightio.frameworks.torch.read import attention, conv, core, merge, norm, ops, recurrent

#: The layer families, each registering its modules and functions into ``base.TORCH_READ``.
FAMILIES = (core, conv, norm, recurrent, merge, attention, ops)
