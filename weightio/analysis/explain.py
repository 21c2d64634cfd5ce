"""``weightio.analysis.explain``: one forward pass written out layer by layer, the way one checks it by hand.

For each layer in evaluation order: the formula it applies (``relu(x · Wᵀ + b)``), its input,
its parameters, the pre-activation (for layers with a fused activation) and its output; small
dense layers are also expanded into their sums (``0.5·x[0] + … + b``). Big tensors are
abbreviated. It ends in the model's output, which is exactly what ``weightio.run`` returns.

The values come from ``weightio.runtime.forward``'s ``Trace``: this module does not compute the
model again. The only arithmetic here is the affine part of a dense layer with an activation,
which the runtime fuses and a learner wants to see before the activation is applied.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from weightio.errors import InvalidInputError
from weightio.format.archive import Archive
from weightio.runtime.base import InputLike, as_float64
from weightio.runtime.forward import forward, output_dtype
from weightio.spec.base import LayerBase
from weightio.spec.model import ModelSpec

#: Tensors with more elements than this are shown abbreviated (first and last values).
SHOW_ELEMENTS = 32
#: Dense layers with at most this many weights are expanded into their sums, unit by unit.
EXPAND_WEIGHTS = 32


class Values(BaseModel):
    """A tensor shown to a reader: all of it when small, its ends and range when big."""

    shape: list[int]
    abbreviated: bool
    values: Any = Field(default=None, description="The full nested list, when not abbreviated.")
    head: list[float] | None = Field(default=None, description="First values (flattened), when abbreviated.")
    tail: list[float] | None = Field(default=None, description="Last values (flattened), when abbreviated.")
    min: float | None = None
    max: float | None = None
    text: str = Field(description="A printable rendering (numpy's, abbreviated).")


class Step(BaseModel):
    """One layer of the forward pass."""

    index: int
    layer: str
    kind: str
    source_class: str | None
    formula: str = Field(description="What the layer computes from its input x.")
    inputs: list[str] = Field(description="Where x comes from (layers or model inputs).")
    input: Values
    parameters: dict[str, Values]
    pre_activation: Values | None = Field(default=None, description="x · Wᵀ + b before the activation.")
    expansion: list[str] | None = Field(default=None, description="Small dense layers written out as sums.")
    output: Values


class Explanation(BaseModel):
    """A forward pass of one sample, step by step; ``str()`` gives the text a reader follows."""

    model: str
    sample: int
    inputs: dict[str, Values]
    steps: list[Step]
    outputs: dict[str, Values] = Field(description="The model's outputs, as weightio.run returns them.")
    _arrays: list[np.ndarray] = PrivateAttr(default_factory=list)

    def output_arrays(self) -> list[np.ndarray]:
        """The model's outputs as arrays (batch of one), in the model's dtype, as ``run`` gives."""
        return list(self._arrays)

    def to_text(self) -> str:
        """Render for a terminal or a text file."""
        return explanation_text(self)

    def __str__(self) -> str:
        return self.to_text()


def show(array: np.ndarray, *, limit: int = SHOW_ELEMENTS) -> Values:
    """Describe ``array`` for a reader; abbreviated beyond ``limit`` elements."""
    array = np.asarray(array)
    text = np.array2string(
        array, threshold=limit, edgeitems=3, precision=6, max_line_width=100, floatmode="maxprec"
    )
    numeric = array.dtype.kind in "biuf"
    if array.size <= limit:
        return Values(shape=list(array.shape), abbreviated=False, values=array.tolist(), text=text)
    flat = array.reshape(-1)
    return Values(
        shape=list(array.shape),
        abbreviated=True,
        head=[float(v) for v in flat[:6]],
        tail=[float(v) for v in flat[-3:]],
        min=float(np.nanmin(flat)) if numeric else None,
        max=float(np.nanmax(flat)) if numeric else None,
        text=text,
    )


def formula(layer: LayerBase) -> str:
    """What ``layer`` computes, as a formula in its input ``x`` (the kind states it)."""
    return layer.formula()


def _signed(value: float, first: bool) -> str:
    if first:
        return f"{value:.6g}"
    return f"- {-value:.6g}" if value < 0 else f"+ {value:.6g}"


def _expansion(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pre: np.ndarray) -> list[str]:
    """``[u] = W[u,0]·x[0] + … + b[u]`` with the numbers in, one line per unit."""
    lines = []
    for unit in range(w.shape[0]):
        terms = [
            f"{_signed(float(w[unit, j]), j == 0)}·{float(x[j]):.6g}" for j in range(w.shape[1])
        ]
        if b is not None:
            terms.append(_signed(float(b[unit]), False))
        lines.append(f"[{unit}] = {' '.join(terms)} = {float(pre[unit]):.6g}")
    return lines


def _dense_details(layer: Any, params: dict[str, np.ndarray], x: np.ndarray) -> tuple[Values | None, list[str] | None]:
    """Pre-activation (when an activation follows) and the written-out sums (when small)."""
    w = params["weight"]
    b = params.get("bias")
    pre = x @ w.T + (b if b is not None else 0.0)
    shown = show(pre) if layer.activation.name != "linear" else None
    expansion = None
    if w.size <= EXPAND_WEIGHTS and x.ndim == 1:
        expansion = _expansion(x, w, b, pre)
    return shown, expansion


def _bind_one(spec: ModelSpec, x: InputLike, sample: int) -> Any:
    """Accept a batch or a single unbatched sample; keep exactly one sample."""

    def one(array: Any, declared: tuple[int | None, ...]) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim == len(declared):
            array = array[None, ...]
        if array.ndim >= 1 and not 0 <= sample < array.shape[0]:
            raise InvalidInputError(
                f"sample {sample} is out of range for a batch of {array.shape[0]}"
            )
        return array[sample : sample + 1]

    if isinstance(x, dict):
        shapes = {inp.name: tuple(inp.shape) for inp in spec.inputs}
        return {k: one(v, shapes.get(k, ())) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and len(spec.inputs) > 1:
        return [one(v, tuple(inp.shape)) for v, inp in zip(x, spec.inputs)]
    declared = tuple(spec.inputs[0].shape) if spec.inputs else ()
    return one(x, declared)


def explain_archive(archive: Archive, x: InputLike, *, sample: int = 0) -> Explanation:
    """Write out the forward pass of one input of ``archive``, layer by layer.

    ``x`` and ``sample`` are as ``weightio.explain`` documents them; the archive must have an
    architecture (a weights-only archive cannot run).
    """
    spec = archive.spec
    batch = _bind_one(spec, x, sample)
    outputs, trace = forward(archive, batch)
    steps = []
    for position, index in enumerate(spec.topological_order()):
        layer = spec.layers[index]
        sources = spec.layer_inputs(index)
        xs = [trace.values[name][0] for name in sources]
        params = {p: as_float64(archive.tensors[ref.key]) for p, ref in layer.tensor_refs().items()}
        pre, expansion = None, None
        if layer.kind == "dense":
            pre, expansion = _dense_details(layer, params, xs[0])
        steps.append(
            Step(
                index=position + 1,
                layer=layer.name,
                kind=layer.kind,
                source_class=layer.source_class,
                formula=formula(layer),
                inputs=sources,
                input=show(xs[0]) if len(xs) == 1 else show(np.concatenate([v.reshape(-1) for v in xs])),
                parameters={p: show(v) for p, v in params.items()},
                pre_activation=pre,
                expansion=expansion,
                output=show(trace.values[layer.name][0]),
            )
        )
    dtype = output_dtype(spec)
    arrays = [out.astype(dtype) if out.dtype.kind == "f" else out for out in outputs]
    first_inputs = [name for name in trace.order if name not in {layer.name for layer in spec.layers}]
    explanation = Explanation(
        model=spec.name,
        sample=sample,
        inputs={name: show(trace.values[name][0]) for name in first_inputs},
        steps=steps,
        outputs={out.name: show(arr[0]) for out, arr in zip(spec.outputs, arrays)},
    )
    explanation._arrays = arrays
    return explanation


def parse_input(text: str, spec: ModelSpec) -> np.ndarray:
    """Turn ``--input`` into an array: a ``.npy`` path, or numbers typed on the command line.

    ``'10'``, ``'1,2,3'``, ``'1 2 3'`` or JSON (``'[[1, 2, 3]]'``) for a single-input model; the
    values take the model input's declared dtype, as the framework would receive them. ``.npy``
    files are read without pickles.
    """
    from pathlib import Path

    from weightio.format.paths import open_regular
    from weightio.spec.dtypes import numpy_dtype

    if text.lower().endswith(".npy"):
        path = Path(text)
        try:
            with open_regular(path) as handle:  # never blocks on a FIFO or reads a device
                return np.load(handle, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read the input as a .npy array ({exc})", file=path) from None
    if len(spec.inputs) != 1:
        raise InvalidInputError(
            f"the model takes {len(spec.inputs)} inputs; give them as one .npy file per model "
            "through the Python API (weightio.explain(archive, [x1, x2, ...]))"
        )
    dtype = numpy_dtype(spec.inputs[0].dtype)
    import json

    try:
        data = json.loads(text)
    except ValueError:
        data = [part for part in text.replace(",", " ").split() if part]
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"cannot read {text!r} as numbers; give e.g. '10', '1,2,3' or a .npy file"
        ) from None
    if array.ndim == 0:
        array = array.reshape(1)
    return array.astype(dtype)


def _block(label: str, values: Values, indent: str = "    ") -> list[str]:
    shape = "×".join(map(str, values.shape)) or "scalar"
    text = values.text.replace("\n", "\n" + indent + " " * (len(label) + 2))
    lines = [f"{indent}{label}: {text}   [{shape}]"]
    if values.abbreviated and values.min is not None:
        lines.append(f"{indent}{' ' * (len(label) + 2)}(abbreviated; min {values.min:.6g}, max {values.max:.6g})")
    return lines


def explanation_text(explanation: Explanation) -> str:
    """The forward pass as a learner would write it out by hand."""
    out = [f"Forward pass of {explanation.model!r}, sample {explanation.sample} (float64 inside)", ""]
    for name, values in explanation.inputs.items():
        out += _block(f"input {name}", values, indent="")
    for step in explanation.steps:
        cls = f" ({step.source_class})" if step.source_class else ""
        out += ["", f"step {step.index}: {step.layer} — {step.kind}{cls}"]
        out.append(f"    formula: {step.layer} = {step.formula}")
        out += _block(f"x = {', '.join(step.inputs)}", step.input)
        labels = {"weight": "W", "bias": "b"}
        for param, values in step.parameters.items():
            out += _block(labels.get(param, param), values)
        if step.expansion:
            out.append("    by hand, unit by unit: [u] = W[u,0]·x[0] + W[u,1]·x[1] + … + b[u]")
            out += [f"      {line}" for line in step.expansion]
        if step.pre_activation is not None:
            out += _block("pre-activation x · Wᵀ + b", step.pre_activation)
        out += _block("output", step.output)
    out.append("")
    for name, values in explanation.outputs.items():
        out += _block(f"model output {name} (= weightio.run)", values, indent="")
    return "\n".join(out) + "\n"
