"""The Keras reader registry, the layer entry every reader receives, and reading one layer or keeping it opaque."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from weightio.errors import MalformedFileError, UnsupportedLayerError, WeightioError
from weightio.frameworks.common import TensorCollector
from weightio.frameworks.keras.activations import (
    NotExact,
    short,
)
from weightio.frameworks.keras.read.graph import (
    policy_name,
)
from weightio.registry import Registry
from weightio.spec.base import LayerBase
from weightio.spec.core import (
    OpaqueLayer,
)
from weightio.spec.layers import LAYER_KINDS


@dataclass
class KerasLayerEntry:
    """One Keras layer as the mapping functions see it: plain data only."""

    name: str
    class_name: str
    module: str | None
    config: dict[str, Any]
    weights: list[np.ndarray]
    inputs: list[str] | None
    #: The whole serialized layer (``build_config``, ``inbound_nodes``…), as data.
    raw: dict[str, Any] = field(default_factory=dict)
    #: Layout transforms a mapping applied; copied into provenance when it succeeds.
    transforms: list[str] = field(default_factory=list)
    #: ``channels``/``plain`` per source and for the output (``layout_flow``): is it a feature map?
    input_tags: list[str] = field(default_factory=list)
    output_tag: str = "plain"

    @property
    def source_class(self) -> str:
        """``keras.layers.Dense``-style name: module (as data, never imported) and class."""
        return f"{self.module}.{self.class_name}" if self.module else self.class_name


ReadFn = Callable[[KerasLayerEntry, TensorCollector], LayerBase]

#: Keras ``class_name`` -> function turning that layer into a spec layer.
KERAS_READ: Registry[ReadFn] = Registry("keras", "read")



def layer_fields(entry: KerasLayerEntry) -> dict[str, Any]:
    """The fields every spec layer takes from its Keras entry: name, inputs, source class."""
    return {"name": entry.name, "inputs": entry.inputs, "source_class": entry.source_class}


def expect_weights(entry: KerasLayerEntry, count: int) -> None:
    """Keep the layer opaque unless it holds exactly ``count`` arrays."""
    if len(entry.weights) != count:
        raise NotExact(
            f"{entry.class_name} was expected to hold {count} weight(s) but holds "
            f"{len(entry.weights)} (LoRA or a subclass adds variables weightio cannot fold exactly)"
        )


_QUANTIZED_PREFIXES = ("int8", "int4", "float8", "gptq", "awq", "uint")


def refuse_quantized(entry: KerasLayerEntry) -> None:
    """Quantized layers store integer/float8 kernels plus scales: refuse rather than mislabel."""
    policy_class, policy = policy_name(entry.config.get("dtype"))
    quantized = (
        (policy_class or "").startswith("Quantized")
        or policy.startswith(_QUANTIZED_PREFIXES)
        or entry.config.get("quantization_config") is not None
        or any(w.dtype.kind in "iu" or "float8" in w.dtype.name for w in entry.weights)
    )
    if quantized:
        raise UnsupportedLayerError(
            f"{entry.class_name} is quantized (dtype policy {policy!r}); weightio does not "
            "archive quantized Keras layers yet. Archive the float model before quantizing it",
            layer=entry.name,
        )


def config_number(config: dict[str, Any], key: str, default: float | None) -> float | None:
    """A number from a layer config (``default`` when absent); anything else is not exact."""
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotExact(f"{key}={short(value)} is not a number")
    return float(value)


# -- opaque ---------------------------------------------------------------------------------


def plain_json(value: Any) -> Any:
    """Return ``value`` as strict JSON data (lists, not tuples; non-finite floats as strings)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return plain_json(value.item())
    return repr(value)


def opaque_layer(entry: KerasLayerEntry, tensors: TensorCollector, reason: str) -> OpaqueLayer:
    """Keep a layer as-is: its config as data, its arrays as ``var_0, var_1…`` in weight order."""
    refs = {f"var_{i}": tensors.add(entry.name, f"var_{i}", w) for i, w in enumerate(entry.weights)}
    return OpaqueLayer(
        **layer_fields(entry), reason=reason, config=plain_json(entry.config), tensors=refs
    )


def read_layer(entry: KerasLayerEntry, tensors: TensorCollector) -> LayerBase:
    """Map one layer, or keep it opaque with the reason why.

    Each mapping writes into a scratch collector merged only on success, so a mapping that gives
    up half-way leaves no stray tensors behind.
    """
    fn = KERAS_READ.get(class_key(entry.class_name, entry.module))
    if fn is None:
        reason = f"weightio has no mapping for Keras class {entry.class_name!r}"
    else:
        scratch = TensorCollector()
        try:
            layer = fn(entry, scratch)
        except NotExact as exc:
            reason = str(exc)
        except ValidationError as exc:
            first = exc.errors()[0]["msg"]
            reason = f"its config does not fit the {entry.class_name} mapping ({first})"
        except WeightioError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # a value of the wrong type where Keras writes a number, list or dict
            raise MalformedFileError(
                f"the {entry.class_name} config does not follow Keras's format "
                f"({type(exc).__name__}: {str(exc)[:120]})",
                layer=entry.name,
            ) from None
        else:
            for key, array in scratch.arrays.items():
                if key in tensors.arrays:
                    raise MalformedFileError(f"tensor {key!r} collected twice", layer=entry.name)
                tensors.arrays[key] = array
            return layer
    entry.transforms.clear()
    return opaque_layer(entry, tensors, reason)


#: Where Keras records ``keras.ops`` calls made in a Functional model (``keras.src.ops.numpy``…).
OPERATIONS_PREFIX = "keras.src.ops"


def class_key(class_name: str, module: str | None) -> str:
    """The registry key of a serialized Keras class.

    A ``keras.ops`` call shares its class name with a layer (``ops.add`` is ``Add``, like
    ``keras.layers.Add``) but not its meaning (a constant operand, broadcasting), so operations
    are registered under their module: ``keras.src.ops.numpy.Add``. Anything else, and an
    operation weightio registers no reader for, is keyed by its class name.
    """
    if module and module.startswith(OPERATIONS_PREFIX):
        qualified = f"{module}.{class_name}"
        if qualified in KERAS_READ:
            return qualified
    return class_name


def class_trait(class_name: str) -> str | None:
    """The layout trait of the spec kinds a Keras class is read as (``LayoutTrait``).

    None for a class weightio does not map (it is kept opaque). A class read as several kinds
    takes the one trait other than ``plain`` among them (its reader picks the kind knowing the
    input's form: a per-feature ``Rescaling`` of plain data is ``affine``, of a feature map
    ``rescaling``), ``plain`` when all are, and None when they disagree. This is how the Keras
    reader knows, from the config alone, which Keras layers read or write feature maps: the
    fact lives on the spec kind, not in a list of Keras class names.
    """
    if class_name not in KERAS_READ:
        return None
    traits = {LAYER_KINDS[kind].layout for kind in KERAS_READ.produces(class_name)}
    special = traits - {"plain"}
    if not special:
        return "plain"
    if special == {"merge", "per_channel"}:
        # an operation read as a merge of tensors or as arithmetic with a constant: with one
        # tensor the merge rule (a feature map when every input is one) is the per-channel rule
        return "merge"
    return special.pop() if len(special) == 1 else None
