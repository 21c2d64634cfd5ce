"""The whole-model spec: provenance, inputs, layers, wiring, outputs, proof of conversion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, model_validator

from weightio.dtypes import DTypeName
from weightio.spec.layers import Layer, LayerBase
from weightio.spec.tensors import SpecModel, TensorRef

#: Bumped on any change an older reader could misread; see docs/format.md.
FORMAT_VERSION = "1.0"

Layout = Literal["features_last", "channels_last", "channels_first"]


class Provenance(SpecModel):
    """Where the weights came from and how they were turned into canonical form."""

    source_framework: Literal["keras", "torch", "sklearn", "safetensors", "weightio", "unknown"]
    source_framework_version: str | None = None
    source_class: str | None = Field(default=None, description="e.g. 'keras.Sequential'.")
    source_file: str | None = Field(default=None, description="File name only, never a full path.")
    source_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    weightio_version: str
    created_at: str = Field(description="UTC, ISO 8601.")
    transforms: list[str] = Field(
        default_factory=list,
        description="Layout transforms applied to reach canonical form, one line each.",
    )


class InputSpec(SpecModel):
    """One model input. ``shape`` excludes the batch axis; ``None`` marks a free dimension."""

    name: str = Field(min_length=1)
    shape: tuple[int | None, ...]
    dtype: DTypeName = "F32"
    layout: Layout = "features_last"


#: What an output means, in scikit-learn's words (``None``: a plain network output).
OutputRole = Literal["predict", "predict_proba", "decision_function", "transform"]


class OutputSpec(SpecModel):
    """One model output: the layer that produces it, and class labels for classifiers.

    ``role`` says which estimator method the output reproduces (``predict_proba`` columns are
    ordered as ``class_labels``); readers of plain networks leave it unset.
    """

    name: str = Field(min_length=1)
    layer: str = Field(min_length=1, description="Name of the layer (or input) producing it.")
    class_labels: list[int | float | str | bool] | None = None
    role: OutputRole | None = Field(
        default=None,
        description="Which scikit-learn method this output reproduces, when known.",
    )


class OutputCheck(SpecModel):
    """How closely one output agreed between two witnesses."""

    output: str
    witnesses: tuple[str, str]
    worst_abs: float
    worst_rel: float
    scale: float = Field(description="max |reference|, the magnitude tolerances are scaled to.")
    passed: bool


class VerificationRecord(SpecModel):
    """What a conversion proved: the probe, the tolerance, the figures."""

    target: str = Field(description="What was checked against the source, e.g. 'torch', 'keras'.")
    seed: int
    samples: int
    atol: float
    rtol: float
    checks: list[OutputCheck]
    passed: bool


class ModelSpec(SpecModel):
    """A model in weightio's neutral form: everything but the tensor bytes.

    ``weights_only`` marks an archive read from a bare state dict: layers group the tensors by
    name prefix (as ``opaque``), there is no wiring, and no runnable model can be built from it.
    """

    format_version: str = FORMAT_VERSION
    name: str = Field(min_length=1)
    provenance: Provenance
    weights_only: bool = False
    inputs: list[InputSpec] = Field(default_factory=list)
    layers: list[Layer] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(default_factory=list)
    verification: list[VerificationRecord] = Field(default_factory=list)
    extra: dict[str, Any] = Field(
        default_factory=dict, description=(
            "JSON data for tools, namespaced by adapter (e.g. 'sklearn': the source estimator "
            "classes, so to_sklearn can rebuild a Ridge as a Ridge). Never used to compute outputs."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        problems = _find_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- wiring ---------------------------------------------------------------------------
    def layer(self, name: str) -> LayerBase:
        """Return the layer called ``name`` (KeyError if absent)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def layer_inputs(self, index: int) -> list[str]:
        """Return the names feeding ``layers[index]``, resolving the chain default."""
        layer = self.layers[index]
        if layer.inputs is not None:
            return list(layer.inputs)
        if index == 0:
            return [self.inputs[0].name] if self.inputs else []
        return [self.layers[index - 1].name]

    @property
    def is_chain(self) -> bool:
        """True when one input flows through the layers in order to one output."""
        if self.weights_only or len(self.inputs) != 1 or len(self.outputs) != 1:
            return False
        previous = self.inputs[0].name
        for index, layer in enumerate(self.layers):
            if self.layer_inputs(index) != [previous]:
                return False
            previous = layer.name
        return self.outputs[0].layer == previous

    def topological_order(self) -> list[int]:
        """Return layer indices in an order where every layer follows its inputs."""
        return _topological_order(self)

    def tensor_refs(self) -> Iterator[tuple[LayerBase, str, TensorRef]]:
        """Yield ``(layer, parameter name, TensorRef)`` for every tensor, in layer order."""
        for layer in self.layers:
            for param, ref in layer.tensor_refs().items():
                yield layer, param, ref


def _find_problems(spec: ModelSpec) -> list[str]:
    """Collect every inconsistency at once, so a user fixes them in one pass."""
    problems: list[str] = []
    names: set[str] = set()
    for inp in spec.inputs:
        if inp.name in names:
            problems.append(f"input name {inp.name!r} is used twice")
        names.add(inp.name)
    for index, layer in enumerate(spec.layers):
        if layer.name in names:
            problems.append(f"layers[{index}]: name {layer.name!r} is used twice")
        names.add(layer.name)
    keys: set[str] = set()
    for layer, _param, ref in spec.tensor_refs():
        if ref.key in keys:
            problems.append(f"layer {layer.name!r}: tensor key {ref.key!r} is used twice")
        keys.add(ref.key)
    if spec.weights_only:
        return problems
    for index, layer in enumerate(spec.layers):
        if layer.inputs is None and index == 0 and not spec.inputs:
            problems.append(f"layers[0] {layer.name!r} reads the model input but the spec has none")
        for source in layer.inputs or []:
            if source not in names:
                problems.append(f"layer {layer.name!r} reads unknown input {source!r}")
            elif source == layer.name:
                problems.append(f"layer {layer.name!r} reads itself")
    for out in spec.outputs:
        if out.layer not in names:
            problems.append(f"output {out.name!r} names unknown layer {out.layer!r}")
    if not problems:
        try:
            _topological_order(spec)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def _topological_order(spec: ModelSpec) -> list[int]:
    index_of = {layer.name: i for i, layer in enumerate(spec.layers)}
    state: dict[int, int] = {}  # 1 = visiting, 2 = done
    order: list[int] = []
    for start in range(len(spec.layers)):
        if state.get(start) == 2:
            continue
        stack: list[tuple[int, Iterator[str]]] = [(start, iter(spec.layer_inputs(start)))]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            for source in pending:
                dep = index_of.get(source)
                if dep is None:
                    continue  # a model input
                if state.get(dep) == 1:
                    raise ValueError(
                        f"the layer graph has a cycle through {spec.layers[dep].name!r}"
                    )
                if state.get(dep) != 2:
                    state[dep] = 1
                    stack.append((dep, iter(spec.layer_inputs(dep))))
                    break
            else:
                stack.pop()
                state[node] = 2
                order.append(node)
    return order
