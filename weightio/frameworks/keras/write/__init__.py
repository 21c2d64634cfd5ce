"""Spec layers -> Keras layers, as data, and the two back ends consuming it.

``base`` holds the registry ``KERAS_WRITE`` (keyed by spec kind) and the data each mapping
returns (``KerasLayer``: config, arrays, output shape, nested variables); each family module
registers its kinds into it and this package imports the families from the list below.
``assemble`` turns an archive into the whole model as data; ``build`` (live Keras) and
``frameworks.keras.files.writer`` (a ``.keras`` file, no Keras) consume that one description.
"""

from __future__ import annotations

from weightio.frameworks.keras.write import attention, conv, core, merge, norm, ops, recurrent

#: The layer families, each registering its kinds into ``base.KERAS_WRITE``.
FAMILIES = (core, conv, norm, recurrent, merge, attention, ops)
