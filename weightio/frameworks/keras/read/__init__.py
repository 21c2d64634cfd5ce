"""Keras layers -> spec layers, from the serialized config and arrays only (no Keras import).

``base`` holds the registry ``KERAS_READ`` (keyed by Keras class name); each family module
registers its classes into it and this package imports the families from the list below.
"""

from __future__ import annotations

from weightio.frameworks.keras.read import attention, conv, core, merge, norm, ops, recurrent

#: The layer families, each registering its Keras classes into ``base.KERAS_READ``.
FAMILIES = (core, conv, norm, recurrent, merge, attention, ops)
