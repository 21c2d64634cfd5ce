"""Keras 3's serialized vocabulary, as plain data: dtype policies, initializers, layer entries.

Every Keras write mapping describes its layers in the form ``keras.saving.serialize_keras_object``
gives them (the form ``config.json`` holds), so that both back ends read one description: the
live one hands it to ``keras.saving.deserialize_keras_object``, the file one writes it out. The
forms here follow Keras 3.15 (``KERAS_FORMAT_VERSION``); a test deserializes every mapping's
output with Keras and checks that serializing it again gives the same data back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Keras version whose serialized forms these are (written to ``metadata.json``).
KERAS_FORMAT_VERSION = "3.15.1"

#: Shape without the batch axis; ``None`` for a free dimension.
Shape = tuple[int | None, ...]


def policy(dtype: str) -> dict[str, Any]:
    """A layer's ``dtype`` entry: the ``DTypePolicy`` of that name."""
    return {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": dtype},
        "registered_name": None,
    }


def initializer(class_name: str, **config: Any) -> dict[str, Any]:
    """A serialized ``keras.initializers`` object (only weightio's arrays matter: it never runs)."""
    if class_name in ("GlorotUniform", "GlorotNormal"):
        config = {"seed": None, "input_axes": None, "output_axes": None, **config}
    return {
        "module": "keras.initializers",
        "class_name": class_name,
        "config": config,
        "registered_name": None,
    }


GLOROT = initializer("GlorotUniform")
ZEROS = initializer("Zeros")
ONES = initializer("Ones")
ORTHOGONAL = initializer("Orthogonal", seed=None, gain=1.0)


def none_of(*keys: str) -> dict[str, None]:
    """``{key: None}`` for the regularizers and constraints a layer config lists as unset."""
    return dict.fromkeys(keys)


def layer_config(name: str, dtype: str, *, trainable: bool = True, **fields: Any) -> dict[str, Any]:
    """The ``config`` of a Keras layer: name, trainable and dtype policy, then its own fields."""
    return {"name": name, "trainable": trainable, "dtype": policy(dtype), **fields}


def batch_shape(shape: Shape) -> list[int | None]:
    """A Keras shape with its batch axis, as JSON data."""
    return [None, *shape]


def build_config(*shapes: Shape) -> dict[str, Any]:
    """``build_config`` recording the input shape(s) a layer was built with.

    One input: ``{"input_shape": [None, ...]}``; several (a merge): a list of such shapes.
    """
    if len(shapes) == 1:
        return {"input_shape": batch_shape(shapes[0])}
    return {"input_shape": [batch_shape(s) for s in shapes]}


def numpy_value(array: np.ndarray) -> dict[str, Any]:
    """An array inside a config (``Rescaling(scale=...)``), as Keras serializes numpy arrays."""
    array = np.asarray(array)
    return {"class_name": "__numpy__", "config": {"value": array.tolist(), "dtype": str(array.dtype)}}


def keras_tensor(shape: Shape, dtype: str, source: str, node: int = 0) -> dict[str, Any]:
    """A reference to the output of call ``node`` of layer ``source`` in an ``inbound_nodes``
    entry (a layer called several times has one node per call).
    """
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": batch_shape(shape), "dtype": dtype, "keras_history": [source, node, 0]},
    }


#: The ``[:, -1]`` index of a ``GetItem`` call, as Keras serializes it.
LAST_STEP_KEY = [{"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}}, -1]
