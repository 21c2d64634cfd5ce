"""Modules returning tuples (recurrent layers, attention): which element the graph reads."""

from __future__ import annotations

from weightio.errors import UnsupportedLayerError
from weightio.spec.base import LayerBase
from weightio.spec.model import OutputSpec
from weightio.spec.recurrent import (
    RECURRENT_KINDS,
    RecurrentBase,
)

#: Function keys whose extra arguments are tensors (checked by their readers, not refused).
MULTI_TENSOR_KEYS = frozenset(
    {
        "operator.add",
        "torch.add",
        "operator.sub",
        "torch.sub",
        "operator.mul",
        "torch.mul",
        "torch.maximum",
        "torch.minimum",
        "torch.cat",
        "torch.concat",
    }
)

GETITEM_TAG = "operator.getitem:"
_TUPLE_KINDS = RECURRENT_KINDS | {"multi_head_attention"}


def _returns_tuple(layer: LayerBase) -> bool:
    """A recurrent module or nn.MultiheadAttention (a composite block's attention is a tensor)."""
    if layer.kind == "multi_head_attention":
        return layer.source_class == "torch.nn.MultiheadAttention"
    return layer.kind in _TUPLE_KINDS


# -- tuple resolution -----------------------------------------------------------------------


def _pick(layer: LayerBase) -> int | None:
    if layer.kind == "identity" and (layer.source_class or "").startswith(GETITEM_TAG):
        return int(layer.source_class[len(GETITEM_TAG) :])  # type: ignore[index]
    return None


#: What the graph may read of a recurrent module's result.
_READABLE = ("weightio reads its output sequence, output[:, -1], (one direction) h_n[-1], and "
             "(bidirectional) torch.cat([h_n[-2], h_n[-1]], dim=-1)")


def _join_directions(layers: list[LayerBase], meaning: dict[str, tuple[str, str]],
                     consumers: dict[str, list[str]], by_name: dict[str, LayerBase]) -> None:
    """``torch.cat([h_n[-2], h_n[-1]], -1)`` of one bidirectional layer is its final state, as
    Keras's ``Bidirectional(..., return_sequences=False)`` gives it (forward, then backward):
    the cat takes the picks' place. Any other use of a direction's state is refused.
    """
    joined: set[str] = set()
    for layer in layers:
        inputs = layer.inputs or []
        if layer.kind != "concatenate" or len(inputs) != 2:
            continue
        first, second = (meaning.get(name) for name in inputs)
        if (first and second and first[0] == "forward" and second[0] == "backward"
                and first[1] == second[1] and layer.axis in (-1, 1)  # type: ignore[attr-defined]
                and all(consumers.get(name) == [layer.name] for name in inputs)):
            meaning[layer.name] = ("final", first[1])
            joined.update(inputs)
    for name, (what, base) in list(meaning.items()):
        if what in ("forward", "backward"):
            if name not in joined:
                raise UnsupportedLayerError(
                    f"reads the {what} final state of the bidirectional {by_name[base].kind} "
                    f"{base!r} alone; {_READABLE}", layer=name)
            del meaning[name]


def resolve_tuples(
    layers: list[LayerBase], outputs: list[OutputSpec]
) -> tuple[list[LayerBase], list[OutputSpec]]:
    """Replace the provisional tuple picks by the layers they select (see module doc).

    Raises:
        UnsupportedLayerError: a pick that is not the sequence or a one-directional final state.
    """
    by_name = {layer.name: layer for layer in layers}
    if not any(_returns_tuple(layer) or _pick(layer) is not None for layer in layers):
        return layers, outputs

    def trace(name: str) -> tuple[str, list[int]]:
        path: list[int] = []
        while name in by_name and _pick(by_name[name]) is not None:
            path.insert(0, _pick(by_name[name]))  # type: ignore[arg-type]
            name = (by_name[name].inputs or [""])[0]
        return name, path

    consumers: dict[str, list[str]] = {}
    for layer in layers:
        for source in layer.inputs or []:
            consumers.setdefault(source, []).append(layer.name)
    used_names = {out.layer for out in outputs}
    for layer in layers:
        if _returns_tuple(layer) and (
            layer.name in used_names
            or any(_pick(by_name[c]) is None for c in consumers.get(layer.name, []))
        ):
            raise UnsupportedLayerError(
                f"the {layer.source_class} result is a tuple and is used whole; take its output "
                "(out, _ = self.rnn(x)) and use that",
                layer=layer.name,
            )

    def read_directly(name: str) -> bool:
        """Read by a real layer or returned (not only picked further)."""
        return name in used_names or any(_pick(by_name[c]) is None for c in consumers.get(name, []))

    # What each used pick means: ("seq" | "final", recurrent layer name).
    meaning: dict[str, tuple[str, str]] = {}
    for layer in layers:
        if _pick(layer) is None or not read_directly(layer.name):
            continue  # a real layer, an unused pick, or a step of a longer pick (h_n of (h_n, c_n))
        base, path = trace(layer.name)
        rnn = by_name.get(base)
        if rnn is not None and rnn.kind == "multi_head_attention" and path == [0]:
            meaning[layer.name] = ("seq", base)  # (attn_output, attn_weights)[0]
            continue
        if rnn is None or rnn.kind not in RECURRENT_KINDS:
            raise UnsupportedLayerError(
                f"indexes the output of {base!r} with {path}; weightio reads tuple elements of recurrent modules only",
                layer=layer.name,
            )
        state_path = [1, 0, -1] if rnn.kind == "lstm" else [1, -1]
        both = rnn.bidirectional  # type: ignore[attr-defined]
        if path == [0]:
            meaning[layer.name] = ("seq", base)
        elif (path == state_path or (path == [0, -1] and not rnn.batch_first)) and not both:
            meaning[layer.name] = ("final", base)
        elif both and path in (state_path, [*state_path[:-1], -2]):
            # h_n[-2] / h_n[-1]: the last layer's forward / backward final state, valid only as
            # torch.cat([h_n[-2], h_n[-1]], -1) (Keras's Bidirectional without sequences)
            meaning[layer.name] = ("forward" if path[-1] == -2 else "backward", base)
        else:
            raise UnsupportedLayerError(
                f"reads element {path} of the {rnn.kind} {base!r}'s result; {_READABLE}",
                layer=layer.name,
            )
    _join_directions(layers, meaning, consumers, by_name)

    # A last step of a one-directional batch-first sequence is the final state too.
    for layer in layers:
        if layer.kind == "last_step":
            target = meaning.get((layer.inputs or [""])[0])
            base = by_name[target[1]] if target else None
            if (
                target
                and target[0] == "seq"
                and isinstance(base, RecurrentBase)
                and not base.bidirectional
                and base.batch_first
            ):
                meaning[layer.name] = ("final", target[1])

    wants: dict[str, set[str]] = {}
    for name, (what, base) in meaning.items():
        real = [c for c in consumers.get(name, []) if _pick(by_name[c]) is None]
        if (
            what == "seq"
            and real
            and name not in used_names
            and all(meaning.get(c, ("", ""))[0] == "final" for c in real)
        ):
            continue  # read only by last steps, which fold into the layer
        if real or name in used_names:
            wants.setdefault(base, set()).add(what)
    rename: dict[str, str] = {}
    updated: dict[str, LayerBase] = {}
    for base, kinds in wants.items():
        if kinds == {"final"}:
            updated[base] = by_name[base].model_copy(update={"return_sequences": False})
        elif "final" in kinds:
            raise UnsupportedLayerError(
                "both the output sequence and the final state of this layer are used; read one "
                "of them (e.g. output[:, -1] instead of h_n[-1])",
                layer=base,
            )
    for name, (what, base) in meaning.items():
        if what == "final" and base not in updated:
            continue  # a last_step kept on a sequence that is also used whole
        rename[name] = base

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    result = []
    for layer in layers:
        if _pick(layer) is not None or layer.name in rename:
            continue
        layer = updated.get(layer.name, layer)
        if layer.inputs is not None:
            layer = layer.model_copy(update={"inputs": [resolve(s) for s in layer.inputs]})
        result.append(layer)
    outs = [out.model_copy(update={"layer": resolve(out.layer)}) for out in outputs]
    return result, outs
