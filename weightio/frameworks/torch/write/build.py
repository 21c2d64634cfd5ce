"""``Archive`` -> ``torch.nn.Module``: nn.Sequential for a chain, an fx GraphModule otherwise; running modules."""

from __future__ import annotations

import functools
import keyword
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from weightio.errors import UnsupportedLayerError, WeightsOnlyArchiveError
from weightio.format.archive import Archive, plain
from weightio.frameworks.common import recorded_model_classes
from weightio.frameworks.torch.common import (
    numpy_to_tensor,
    tensor_to_numpy,
    torch_module,
)
from weightio.frameworks.torch.write.base import TORCH_WRITE
from weightio.frameworks.torch.write.conv import prepare as conv_prepare
from weightio.frameworks.torch.write.merge import GRAPH_KINDS, graph_value, needs_graph
from weightio.frameworks.torch.write.nesting import mark_groups
from weightio.frameworks.torch.write.quantized import decoded_layers
from weightio.spec.base import LayerBase
from weightio.spec.model import ModelSpec


class ModuleNames:
    """Turns spec layer names into unique torch submodule names.

    A submodule name is an attribute of the parent module: it must not be a keyword, and must
    not shadow what ``nn.Module`` itself has (a layer named ``half``, ``eval`` or
    ``forward`` would replace the method the graph calls, or be shadowed by it).
    """

    def __init__(self) -> None:
        self.used: set[str] = set()
        self._paths: dict[tuple[str, str], str] = {}
        #: Each group's torch path -> its ``/`` path in the spec (``outer.inner`` -> ``outer/inner``).
        self.spec_paths: dict[str, str] = {}

    @property
    def groups(self) -> dict[str, str]:
        """Each nested group's torch path -> its spec name part (``outer/inner`` -> ``inner``)."""
        return {path: spec.rsplit("/", 1)[-1] for path, spec in self.spec_paths.items()}

    def take(self, wanted: str) -> str:
        """A unique attribute name for ``wanted`` (dots and other non-word characters replaced).

        A nested model's layer ``outer/inner`` becomes the submodule path ``outer.inner`` (each
        part cleaned the same way), which an fx GraphModule installs as nested modules, so the
        state dict holds ``outer.inner.weight``; ``groups`` records each group's path and spec
        name, for the ``NestedModel`` that replaces its plain parent (``write/nesting.py``).
        """
        *given, leaf = wanted.split("/")
        prefix = ""
        for depth, part in enumerate(given):
            prefix = self._group(prefix, part) + "."
            self.spec_paths[prefix[:-1]] = "/".join(given[: depth + 1])
        last = self._part(leaf)
        name, n = last, 1
        while prefix + name in self.used or name in module_attributes():
            name, n = f"{last}_{n}", n + 1
        self.used.add(prefix + name)
        return prefix + name

    def _group(self, parent: str, part: str) -> str:
        """The torch path of group ``part`` under ``parent`` (``""`` or ``"outer."``), the same
        one for every layer of the group, and unique: two groups whose names clean to one
        (``a.b`` and ``a_b``) or a group and a layer (``a.b`` next to a layer ``a_b``) get
        ``a_b`` and ``a_b_1``, so no group's layers land in another's module.
        """
        key = (parent, part)
        if key not in self._paths:
            base = self._part(part)
            name, n = base, 1
            while parent + name in self.used or name in module_attributes():
                name, n = f"{base}_{n}", n + 1
            self.used.add(parent + name)
            self._paths[key] = parent + name
        return self._paths[key]

    @staticmethod
    def _part(wanted: str) -> str:
        base = re.sub(r"\W", "_", wanted.replace(".", "_")) or "layer"
        return f"layer_{base}" if keyword.iskeyword(base) else base


@functools.cache
def module_attributes() -> frozenset[str]:
    """Every name ``nn.Module`` defines (methods and attributes a submodule must not take)."""
    nn = torch_module("building PyTorch modules").nn
    return frozenset(dir(nn.Module)) | frozenset(vars(nn.Module()))


def _layer_modules(
    layer: LayerBase, archive: Archive, namer: ModuleNames
) -> list[tuple[str, Any]]:
    """The (name, module) pairs computing ``layer``; a fused activation follows its dense."""
    modules = TORCH_WRITE.lookup(layer.kind, layer=layer.name)(layer, archive)
    # The first plain module carries the layer's name; helpers a writer adds around it come as
    # (suffix, module) pairs; further plain modules are the layer's activation.
    named, main = [], False
    for item in modules:
        if isinstance(item, tuple):
            named.append((namer.take(f"{layer.name}_{item[0]}"), item[1]))
        elif not main:
            named.append((namer.take(layer.name), item))
            main = True
        else:
            named.append((namer.take(f"{layer.name}_activation"), item))
    return named


def tie_shared(archive: Archive, owners: dict[str, Any]) -> None:
    """Make the layers that share a tensor (docs/format.md, "Shared tensors") share one
    ``nn.Parameter`` again: a module called twice, an LM head tied to its embedding.

    ``owners`` maps a layer to the module built for it. A reader's parameter is the module's
    attribute of the spec's parameter name (``weight``, ``bias``) holding the tensor's values;
    one a writer rearranged (a kernel transposed on the way) keeps its own copy, which
    computes the same numbers.
    """
    torch = torch_module("building PyTorch modules")
    spec = archive.spec
    for key, readers in spec.shared_tensors().items():
        array = np.asarray(archive.tensors[key])
        found = []
        for reader in readers:
            layer_name, _, param = reader.rpartition(".")
            module = owners.get(layer_name)
            value = None if module is None else module._parameters.get(param)
            if value is not None and tuple(value.shape) == array.shape and torch.equal(
                value.detach().cpu(), numpy_to_tensor(array)
            ):
                found.append((module, param))
        for module, param in found[1:]:
            first_module, first_param = found[0]
            setattr(module, param, getattr(first_module, first_param))


def _graph_module(archive: Archive) -> Any:
    """Build a ``GraphModule`` for a spec that is not a plain chain."""
    fx = torch_module("building PyTorch modules").fx
    spec: ModelSpec = archive.spec
    graph, namer, submodules = fx.Graph(), ModuleNames(), {}
    owners: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for inp in spec.inputs:
        values[inp.name] = graph.placeholder(re.sub(r"\W", "_", inp.name))
    for index in spec.topological_order():
        layer = spec.layers[index]
        sources = spec.layer_inputs(index)
        if layer.kind in GRAPH_KINDS:
            values[layer.name] = graph_value(
                layer, archive, graph, [values[s] for s in sources],
                lambda wanted, module: _add(submodules, namer.take(wanted), module),
            )
            continue
        named = _layer_modules(layer, archive, namer)
        owners[layer.name] = named[0][1] if named else None
        if len(sources) != 1:
            raise UnsupportedLayerError(
                f"reads {len(sources)} inputs ({', '.join(sources)}); a {layer.kind} layer "
                "reads exactly one",
                layer=layer.name,
            )
        value = values[sources[0]]
        for name, module in named:
            submodules[name] = module
            value = graph.call_module(name, (value,))
        values[layer.name] = value
    results = [values[out.layer] for out in spec.outputs]
    graph.output(results[0] if len(results) == 1 else tuple(results))
    tie_shared(archive, owners)
    module = fx.GraphModule(submodules, graph, class_name=_class_name(spec.name))
    return mark_groups(module, namer.groups, _torch_classes(archive, namer))


def _torch_classes(archive: Archive, namer: ModuleNames) -> dict[str, str]:
    """The Keras reader's ``model_classes`` (by ``/`` path) by torch path, ``""`` for the model."""
    classes = recorded_model_classes(archive)
    by_torch = {path: classes[spec] for path, spec in namer.spec_paths.items() if spec in classes}
    if "" in classes:
        by_torch[""] = classes[""]
    return by_torch


def _add(submodules: dict[str, Any], name: str, module: Any) -> str:
    submodules[name] = module
    return name


def _class_name(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned.isidentifier() else f"Model_{cleaned}"


def to_torch(archive: Archive, *, keep_int8: bool = False) -> Any:
    """Build the ``torch.nn.Module`` an archive describes, in eval mode, weights bit-exact.

    Encoded (quantised) parameters are decoded first (``plain``), but a weight in weight-norm
    form (``weightio.weight_norm``) becomes torch's ``parametrizations.weight_norm``; with ``keep_int8`` a dense or
    conv layer whose weight is integer-encoded becomes a ``QuantizedLinear``/``QuantizedConv``
    holding the integers (``write/quantized.py``), and every other encoded layer is decoded and
    named in a ``UserWarning``.

    Returns:
        An ``nn.Sequential`` for a chain, else a ``torch.fx.GraphModule`` (one output, or a
        tuple of outputs in spec order).

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture (a bare state dict).
        UnsupportedLayerError: a layer with no PyTorch mapping (e.g. opaque), by name.
    """
    torch = torch_module("to_torch")
    if keep_int8:
        decoded = decoded_layers(archive)
        if decoded:
            warnings.warn(
                f"keep_int8: {len(decoded)} layer(s) are dequantised (only int8/uint8 weights of dense "
                "and conv layers stay integer): "
                + ", ".join(decoded[:10]) + (" …" if len(decoded) > 10 else ""), stacklevel=3,
            )
    # weight norm stays encoded: the dense/conv writers build torch's parametrization from it
    archive = plain(archive, keep=("weight_norm", "linear") if keep_int8 else ("weight_norm",))
    spec = archive.spec
    if not spec.weights_only:

        archive = conv_prepare(archive)
        spec = archive.spec
    if spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (read from a bare state dict), so there is no "
            "architecture to build; build the model in PyTorch and copy the weights in with "
            "weightio.load_into(archive, module)",
            file=archive.path,
        )
    nested = any("/" in layer.name for layer in spec.layers)
    if spec.is_chain and not needs_graph(spec) and not nested:
        namer = ModuleNames()
        pairs, owners = [], {}
        for layer in spec.layers:
            named = _layer_modules(layer, archive, namer)
            owners[layer.name] = named[0][1] if named else None
            pairs.extend(named)
        tie_shared(archive, owners)
        module = torch.nn.Sequential(OrderedDict(pairs))
    else:
        module = _graph_module(archive)
    return module.eval()


def _to_tensor(array: Any) -> Any:
    torch = torch_module("run_torch")
    return array if isinstance(array, torch.Tensor) else numpy_to_tensor(np.asarray(array))


def _flatten_outputs(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [item for v in value for item in _flatten_outputs(v)]
    if isinstance(value, Mapping):  # HF's ModelOutput: its set fields, in order (as torch.export)
        return [item for v in value.values() if v is not None for item in _flatten_outputs(v)]
    return [value]


def run_program(module: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run an exported program's module (``ExportedProgram.module()``) without gradients on
    numpy inputs; one array per output. Unlike ``run_torch`` it sets no eval mode: the
    program's graph was fixed at export (torch refuses ``.eval()`` on it).
    """
    torch = torch_module("run_program")
    with torch.no_grad():
        result = module(*[_to_tensor(a) for a in inputs])
    return [
        tensor_to_numpy(out, key=f"output {i}", copy=False)
        for i, out in enumerate(_flatten_outputs(result))
    ]


def run_torch(module: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``module`` in eval mode without gradients on numpy inputs; one array per output.

    The module's train/eval flags are restored afterwards.
    """
    torch = torch_module("run_torch")
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            result = module(*[_to_tensor(a) for a in inputs])
    finally:
        for m, flag in flags:
            m.training = flag
    return [
        tensor_to_numpy(out, key=f"output {i}", copy=False)
        for i, out in enumerate(_flatten_outputs(result))
    ]
