"""Keras activation functions (names and serialized functions) -> spec activations, exactly.

Keras-free: a config's activation is data. Only Keras's own built-in functions are trusted; a
function of the same name from another module is a user's function and is not mapped.
"""

from __future__ import annotations

from typing import Any

from weightio.spec.activations import LINEAR, ActivationFn


class NotExact(Exception):
    """Raised by a mapping function: this layer's config has no exact canonical equivalent.

    Caught by the reader, which then keeps the layer as ``opaque`` with this reason.
    """


#: Keras 3 activation *function* names -> spec activation, with the function's own defaults
#: (checked with ``inspect.signature(keras.activations.X)`` on Keras 3.15): a string in a config
#: means the function called with its defaults.
KERAS_ACTIVATIONS: dict[str, ActivationFn] = {
    "linear": LINEAR,
    "relu": ActivationFn(name="relu"),
    "relu6": ActivationFn(name="relu6"),
    "leaky_relu": ActivationFn(name="leaky_relu", negative_slope=0.2),
    "elu": ActivationFn(name="elu", alpha=1.0),
    "celu": ActivationFn(name="celu", alpha=1.0),
    "selu": ActivationFn(name="selu"),
    "gelu": ActivationFn(name="gelu", approximate=False),
    "sigmoid": ActivationFn(name="sigmoid"),
    "log_sigmoid": ActivationFn(name="log_sigmoid"),
    "hard_sigmoid": ActivationFn(name="hard_sigmoid"),
    "tanh": ActivationFn(name="tanh"),
    "hard_tanh": ActivationFn(name="hard_tanh"),
    "softmax": ActivationFn(name="softmax", axis=-1),
    "log_softmax": ActivationFn(name="log_softmax", axis=-1),
    "softplus": ActivationFn(name="softplus"),
    "softsign": ActivationFn(name="softsign"),
    "silu": ActivationFn(name="silu"),
    "swish": ActivationFn(name="silu"),
    "hard_silu": ActivationFn(name="hard_silu"),
    "hard_swish": ActivationFn(name="hard_silu"),
    "mish": ActivationFn(name="mish"),
    "tanh_shrink": ActivationFn(name="tanh_shrink"),
    "soft_shrink": ActivationFn(name="soft_shrink", threshold=0.5),
    "hard_shrink": ActivationFn(name="hard_shrink", threshold=0.5),
}

#: Modules under which Keras serializes its *built-in* activation functions. A function with the
#: same name from any other module is a user's function and is not trusted to be the built-in.
_BUILTIN_ACTIVATION_MODULES = frozenset(
    {"keras.activations", "keras.src.activations", "keras.src.activations.activations", "builtins"}
)


def activation_from_keras(value: Any) -> ActivationFn:
    """Map a config's ``activation`` entry (string, serialized function, or None) exactly.

    Raises:
        NotExact: for names the spec lacks, custom functions, or layer objects used as activations.
    """
    if value is None:
        return LINEAR
    name: Any = value
    if isinstance(value, dict):
        module = value.get("module")
        if value.get("class_name") != "function" or module not in _BUILTIN_ACTIVATION_MODULES:
            raise NotExact(
                f"activation {short(value)} is not a built-in Keras activation function"
            )
        name = value.get("config")
    if not isinstance(name, str) or name not in KERAS_ACTIVATIONS:
        raise NotExact(
            f"activation {short(name)} has no exact equivalent in weightio "
            f"(supported: {', '.join(sorted(KERAS_ACTIVATIONS))})"
        )
    return KERAS_ACTIVATIONS[name]


def short(value: Any) -> str:
    """``repr(value)``, cut to 120 characters for error messages."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
