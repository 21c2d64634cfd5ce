"""Where Keras 3 keeps the variables of layers that nest other layers, in ``layer.weights`` order.

``model.weights.h5`` stores such a layer's variables under the attribute names of the sublayers
holding them (``layers/bidirectional/forward_layer/cell/vars/0``), while ``layer.weights``
lists them in the order the layer created those sublayers, which no name in the file gives.
The reader needs that order to put a layer's arrays back in sequence, the writer to say where
each array goes; both read it here. Keras-free.
"""

from __future__ import annotations

#: Keras class -> the attributes of its sublayers holding variables, in ``layer.weights`` order.
NESTED_WEIGHTS: dict[str, tuple[str, ...]] = {
    "SimpleRNN": ("cell",),
    "LSTM": ("cell",),
    "GRU": ("cell",),
    "Bidirectional": ("forward_layer", "backward_layer"),
    "MultiHeadAttention": ("query_dense", "key_dense", "value_dense", "output_dense"),
}


def weight_order(class_name: str, attributes: list[str]) -> list[str]:
    """``attributes`` (the sublayer groups found under a layer) in ``layer.weights`` order.

    Known classes give their own order; any other attribute follows in name order (a custom
    layer's sublayers, whose creation order the file does not record).
    """
    known = [a for a in NESTED_WEIGHTS.get(class_name, ()) if a in attributes]
    return known + sorted(a for a in attributes if a not in known)
