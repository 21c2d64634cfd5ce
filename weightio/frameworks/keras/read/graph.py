"""The wiring of a serialized Keras model: inputs, inbound nodes, model endpoints.

Keras-free. Reads the Keras 3 node format (``{"args": [{"class_name": "__keras_tensor__",
"config": {"keras_history": [layer, node, tensor]}}], "kwargs": {}}``) and the Keras 2 one
(``[[layer, node, tensor, kwargs], ...]``).
"""

from __future__ import annotations

from typing import Any

from weightio.errors import MalformedFileError, UnsupportedLayerError, UnsupportedSourceError
from weightio.frameworks.keras.activations import short
from weightio.spec.model import InputSpec


def policy_name(dtype: Any) -> tuple[str | None, str]:
    """Return (policy class, policy name) of a config ``dtype`` entry (str, dict or None)."""
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        policy_class = dtype.get("class_name")  # a file may hold any JSON value here
        return (None if policy_class is None else str(policy_class)), str(name or "")
    return None, str(dtype or "")


_KERAS_DTYPES = {
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}


def _dtype_of(value: Any, *, where: str) -> str:
    """Map an InputLayer dtype (string or policy dict) to a safetensors dtype name."""
    _, name = policy_name(value)
    name = name or "float32"
    if name.startswith("mixed_"):
        name = "float32"
    if name not in _KERAS_DTYPES:
        raise UnsupportedSourceError(f"input dtype {name!r} is not supported", layer=where)
    return _KERAS_DTYPES[name]


def _shape_without_batch(shape: Any, *, where: str) -> tuple[int | None, ...]:
    """Keras shapes include the batch axis; the spec's do not."""
    if not isinstance(shape, (list, tuple)) or len(shape) < 1:
        raise MalformedFileError(
            f"input shape {short(shape)} is not a list with a batch axis", layer=where
        )
    dims = tuple(shape[1:])
    if not all(d is None or (type(d) is int and d >= 0) for d in dims):
        raise MalformedFileError(f"input shape {short(shape)} has invalid dimensions", layer=where)
    return dims


def input_spec(layer: dict[str, Any]) -> InputSpec:
    """An ``InputLayer`` entry -> ``InputSpec`` (Keras 2 configs say ``batch_input_shape``)."""
    config = layer.get("config") or {}
    name = str(config.get("name") or layer.get("name") or "input")
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if shape is None and config.get("shape") is not None:
        shape = [None, *config["shape"]]
    return InputSpec(
        name=name,
        shape=_shape_without_batch(shape, where=name),
        dtype=_dtype_of(config.get("dtype"), where=name),  # type: ignore[arg-type]
    )


def _history_refs(value: Any) -> list[tuple[str, int, int]]:
    """Collect every ``keras_history`` reference (Keras 3 node format) anywhere in ``value``."""
    refs: list[tuple[str, int, int]] = []
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history")
            if not isinstance(history, (list, tuple)) or len(history) != 3:
                raise MalformedFileError(f"a tensor reference lacks keras_history: {short(value)}")
            refs.append((str(history[0]), int(history[1]), int(history[2])))
        else:
            for item in value.values():
                refs.extend(_history_refs(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            refs.extend(_history_refs(item))
    return refs


def node_refs(node: Any, layer: str) -> list[tuple[str, int, int]]:
    """References of one inbound node, Keras 3 (``{"args", "kwargs"}``) or Keras 2 (lists)."""
    try:
        if isinstance(node, dict):
            return _history_refs([node.get("args", []), node.get("kwargs", {})])
        if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
            return [(str(item[0]), int(item[1]), int(item[2])) for item in node]
    except (TypeError, ValueError, IndexError, AttributeError):
        pass
    raise MalformedFileError(f"unreadable inbound node {short(node)}", layer=layer)


def part_name(layer: str, index: int) -> str:
    """The spec name of output ``index`` of a Keras call with several (``ops.split``)."""
    return f"{layer}__part{index}"


def functional_inputs(
    layer: dict[str, Any], name: str, *, multi_output: frozenset[str] = frozenset()
) -> list[str]:
    """The layers/inputs a Functional layer reads, from its single inbound node.

    A layer called twice has been split into one entry per call before this
    (``read/shared.split_calls``); one still called twice here is refused. Output ``k`` of a call in ``multi_output``
    (an ``ops.split``) is read as its own spec tensor, ``part_name(source, k)``.
    """
    nodes = layer.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise MalformedFileError(f"inbound_nodes {short(nodes)} is not a list", layer=name)
    if len(nodes) > 1:
        raise UnsupportedLayerError(
            f"this layer is called {len(nodes)} times (shared weights); weightio's graph has one "
            "call per layer. Give each call its own layer to convert the model",
            layer=name,
        )
    if not nodes:
        return []
    sources = []
    for source, node_index, tensor_index in node_refs(nodes[0], name):
        if source in multi_output and node_index == 0:
            sources.append(part_name(source, tensor_index))
            continue
        if node_index != 0 or tensor_index != 0:
            raise UnsupportedLayerError(
                f"reads output {tensor_index} of call {node_index} of {source!r}; weightio's graph "
                "takes the single output of a layer's single call",
                layer=name,
            )
        sources.append(source)
    return sources


def endpoint_names(value: Any, *, multi_output: frozenset[str] = frozenset()) -> list[str]:
    """``input_layers``/``output_layers``: ``[name, 0, 0]`` for one, else ``[[name, 0, 0], ...]``.

    Dict endpoints (a model built with ``outputs={...}``) are read in their stored order.
    """
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, (list, tuple)):
        raise MalformedFileError(f"model endpoints {short(value)} are not a list")
    if len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int):
        if value[0] in multi_output and isinstance(value[2], int):
            return [part_name(value[0], value[2])]
        return [value[0]]
    names = []
    for item in value:
        names.extend(
            endpoint_names(item, multi_output=multi_output) if not isinstance(item, str) else [item]
        )
    return names


def sequential_build_input(model_config: dict[str, Any]) -> InputSpec | None:
    """A Sequential serialized without an InputLayer: the shape it was built with, if any."""
    config = model_config.get("config") or {}
    shape = config.get("build_input_shape")
    if shape is None:
        shape = (model_config.get("build_config") or {}).get("input_shape")
    if shape is None:
        return None
    _, policy = policy_name(config.get("dtype"))
    dtype = _KERAS_DTYPES.get(policy, "F32") if not policy.startswith("mixed_") else "F32"
    return InputSpec(
        name="input_layer",
        shape=_shape_without_batch(shape, where="input_layer"),
        dtype=dtype,  # type: ignore[arg-type]
    )


def node_arguments(raw: dict[str, Any]) -> list[Any]:
    """The positional arguments of a layer's single call (Keras 3 node format), as data.

    Keras 3 records a ``keras.ops`` call in a Functional model with its constants inline
    (``ops.add(x, 3.0)`` has ``args = [<tensor x>, 3.0]``); empty for Keras 2 nodes.
    """
    nodes = raw.get("inbound_nodes") or []
    node = nodes[0] if isinstance(nodes, list) and nodes else None
    if not isinstance(node, dict):
        return []
    args = node.get("args")
    return list(args) if isinstance(args, (list, tuple)) else []


def is_tensor_ref(value: Any) -> bool:
    """Whether a call argument is a reference to a Keras tensor (``__keras_tensor__``)."""
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def node_tensors(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The config (``shape``, ``dtype``, ``keras_history``) of every tensor a layer's call reads,
    in argument order, as Keras 3 records them; empty where the node does not say.
    """
    nodes = raw.get("inbound_nodes") or []
    node = nodes[0] if isinstance(nodes, list) and nodes else None
    if not isinstance(node, dict):
        return []
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if is_tensor_ref(value):
            config = value.get("config")
            found.append(config if isinstance(config, dict) else {})
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk([node.get("args", []), node.get("kwargs", {})])
    return found


def node_shapes(raw: dict[str, Any]) -> list[tuple[int | None, ...] | None]:
    """The shape (batch included) of every tensor a layer's call reads, where recorded."""
    shapes: list[tuple[int | None, ...] | None] = []
    for config in node_tensors(raw):
        shape = config.get("shape")
        ok = isinstance(shape, (list, tuple)) and all(
            d is None or (type(d) is int and d >= 0) for d in shape
        )
        shapes.append(tuple(shape) if ok else None)  # type: ignore[arg-type]
    return shapes
