"""The whole-model spec: provenance, inputs, layers, wiring, outputs, proof of conversion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, model_validator

from weightio.spec.base import LayerBase, Shape
from weightio.spec.dtypes import DTypeName
from weightio.spec.layers import Layer
from weightio.spec.tensors import DIGEST_PATTERN, SpecModel, TensorRef

#: Bumped on any change an older reader could misread; see docs/format.md. 1.1: digests are
#: ``"<algorithm>:<hex>"`` in ``digest`` / ``source_digest`` (BLAKE3 by default) instead of a
#: plain sha256 in ``sha256`` / ``source_sha256``, which are still read. 1.2: a parameter may be
#: stored encoded (``TensorRef.encoding``: int8 or float8 values with a scale and zero point).
#: 1.3: the encoding scheme ``weight_norm`` (direction and magnitude), and layer names holding
#: ``/`` between the parts of a nested model (``outer/inner``). A 1.2 reader refuses both (closed
#: fields, the name pattern) rather than misreading them.
FORMAT_VERSION = "1.3"

Layout = Literal["features_last", "channels_last", "channels_first"]


class Provenance(SpecModel):
    """Where the weights came from and how they were turned into canonical form."""

    source_framework: Literal["keras", "torch", "sklearn", "safetensors", "weightio", "unknown"]
    source_framework_version: str | None = None
    source_class: str | None = Field(default=None, description="e.g. 'keras.Sequential'.")
    source_file: str | None = Field(default=None, description="File name only, never a full path.")
    source_digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="Digest of the source file's bytes: 'blake3:<hex>' or 'sha256:<hex>'.",
    )
    source_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Format 1.0 only: hex sha256 of the source file. Newer archives write 'source_digest'.",
    )
    source_key: str | None = Field(
        default=None,
        description="The entry of a training checkpoint the state dict was taken from ('model').",
    )
    weightio_version: str
    created_at: str = Field(description="UTC, ISO 8601.")
    transforms: list[str] = Field(
        default_factory=list,
        description="Layout transforms applied to reach canonical form, one line each.",
    )

    @model_validator(mode="after")
    def _one_digest(self) -> Provenance:
        if self.source_digest is not None and self.source_sha256 is not None:
            raise ValueError("provenance records one source digest: 'source_digest' or 'source_sha256'")
        return self

    def recorded_source_digest(self) -> str | None:
        """The source file's digest as ``"<algorithm>:<hex>"`` (a format 1.0 sha256 included)."""
        if self.source_digest is not None:
            return self.source_digest
        return None if self.source_sha256 is None else f"sha256:{self.source_sha256}"


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
    passed: bool = Field(description="Every check passed, and there was at least one.")
    status: Literal["verified", "partial", "not verified"] = Field(
        default="verified",
        description=(
            "'verified': the source itself was run (or is this archive, which the numpy "
            "runtime computes) and compared; 'partial': the source could not be run, so the "
            "target was compared only with the numpy runtime, both built from weightio's reading "
            "of the source; 'not verified': nothing was compared (see 'note')."
        ),
    )
    note: str | None = Field(
        default=None, description="Why the proof is partial or missing, in words."
    )


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
        """Yield ``(layer, parameter name, TensorRef)`` for every tensor, in layer order.

        A shared tensor (docs/format.md, "Shared tensors") comes once per layer reading it;
        ``unique_tensor_refs`` gives each key once.
        """
        for layer in self.layers:
            for param, ref in layer.tensor_refs().items():
                yield layer, param, ref

    def unique_tensor_refs(self) -> Iterator[tuple[LayerBase, str, TensorRef]]:
        """``tensor_refs`` with each key once, at the first layer reading it."""
        seen: set[str] = set()
        for layer, param, ref in self.tensor_refs():
            if ref.key not in seen:
                seen.add(ref.key)
                yield layer, param, ref

    def shared_tensors(self) -> dict[str, list[str]]:
        """Keys read by more than one ``layer.param``, with those readers in layer order: a module
        called twice, or parameters tied between modules (an LM head tied to its embedding).
        """
        readers: dict[str, list[str]] = {}
        for layer, param, ref in self.tensor_refs():
            readers.setdefault(ref.key, []).append(f"{layer.name}.{param}")
        return {key: names for key, names in readers.items() if len(names) > 1}

    def stored_refs(self) -> Iterator[tuple[LayerBase, str, TensorRef]]:
        """Like ``tensor_refs``, for the tensors the file holds: an encoded parameter (format
        1.2) yields its stored values (in the stored dtype), then its scale and zero point; a
        shared key (format 1.2's "Shared tensors") comes once, at the first layer reading it.
        """
        for layer, param, ref in self.unique_tensor_refs():
            for stored in ref.stored_refs():
                yield layer, param, stored

    @property
    def encoded(self) -> bool:
        """Whether any parameter is stored encoded (quantised)."""
        return any(ref.encoding is not None for _, _, ref in self.tensor_refs())


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
    # One key may be read by several layers (a shared tensor) when they agree on what it is.
    keys: dict[str, TensorRef] = {}
    for layer, _param, ref in spec.tensor_refs():
        first = keys.setdefault(ref.key, ref)
        if first is not ref and (first.shape, first.dtype) != (ref.shape, ref.dtype):
            problems.append(
                f"layer {layer.name!r}: tensor key {ref.key!r} is read as {ref.describe()} here "
                f"and as {first.describe()} by an earlier layer (a shared tensor has one shape "
                "and dtype)"
            )
        elif first is not ref and None not in (first.recorded_digest(), ref.recorded_digest()) and (
            first.recorded_digest() != ref.recorded_digest()
        ):
            problems.append(f"layer {layer.name!r}: tensor key {ref.key!r} records two digests")
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
        else:
            problems.extend(size_problems(spec))
    return problems


#: Most elements one layer's output may hold per sample (16 GiB of float32). Sizes follow from
#: the input shape and the hyper-parameters (``LayerBase.output_shape``), so an upsampling factor
#: of 2**40 or a padding of a billion is refused when the spec is validated, before ``run``.
MAX_ACTIVATION_ELEMENTS = 2**32


def activation_shapes(
    spec: ModelSpec, input_shapes: dict[str, Shape] | None = None
) -> dict[str, Shape | None]:
    """Every input's and layer's output shape without the batch axis, where the spec fixes it.

    Args:
        input_shapes: Shapes to use instead of the spec's (the arrays ``run`` was given).
    """
    shapes: dict[str, Shape | None] = {
        inp.name: tuple(inp.shape) for inp in spec.inputs
    }
    shapes.update(input_shapes or {})
    for index in _topological_order(spec):
        layer = spec.layers[index]
        sources = [shapes.get(name) for name in spec.layer_inputs(index)]
        out: Shape | None = None
        if sources and all(x is not None for x in sources):
            try:
                out = layer.output_shape(sources)  # type: ignore[arg-type]
            except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
                out = None
        if out is not None and any(d is not None and d < 0 for d in out):
            out = None  # an impossible size: the runtime reports it with the actual input
        shapes[layer.name] = out
    return shapes


def size_problems(spec: ModelSpec, input_shapes: dict[str, Shape] | None = None,
                  *, batch: int = 1) -> list[str]:
    """Layers whose output would hold more than ``MAX_ACTIVATION_ELEMENTS`` per sample (free
    dimensions counted as 1, so the count is a lower bound), times ``batch``.
    """
    if spec.weights_only:
        return []
    if input_shapes is None:  # free dimensions at their smallest: the sizes are lower bounds
        input_shapes = {inp.name: tuple(1 if d is None else d for d in inp.shape)
                        for inp in spec.inputs}
    problems = []
    for name, shape in activation_shapes(spec, input_shapes).items():
        if shape is None:
            continue
        count = max(batch, 1)
        for d in shape:
            count *= 1 if d is None else d
        if count > MAX_ACTIVATION_ELEMENTS * max(batch, 1):
            problems.append(
                f"layer {name!r} would output at least {count:,} elements per "
                f"{'sample' if batch <= 1 else f'batch of {batch}'} (shape {list(shape)}), over "
                f"the limit of {MAX_ACTIVATION_ELEMENTS:,}; its hyper-parameters (upsampling "
                "size, padding, strides, reshape target) are corrupt or hostile"
            )
            if len(problems) >= 3:
                break
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
