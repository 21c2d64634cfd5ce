"""Copy an archive's weights into an existing ``torch.nn.Module``.

Two ways to pair tensors: a weights-only archive (a bare state dict) pairs by state-dict key;
a full archive pairs the target's parameterised layers with the archive's by order, so weights
read from another framework (other layer names) land in the right place. Either way every
problem is collected and reported at once, nothing is copied unless everything fits, and no
dtype is ever converted.
"""

from __future__ import annotations

from typing import Any

from weightio.errors import StructureMismatchError, TraceError
from weightio.format.archive import Archive
from weightio.frameworks.pairing import pair_layers
from weightio.frameworks.torch.common import (
    numpy_to_tensor,
    torch_dtype_for,
    torch_dtype_name,
    torch_module,
)
from weightio.frameworks.torch.read.trace import read_torch_module
from weightio.spec.dtypes import dtype_name, numpy_dtype


def _mismatch(problems: list[str], archive: Archive, module: Any) -> StructureMismatchError:
    shown = "; ".join(problems[:20])
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return StructureMismatchError(
        f"the archive does not fit {type(module).__name__}: {shown}{more}. Nothing was copied; "
        "build the target with the same layers, shapes and dtypes as the archive",
        file=archive.path,
    )


def _state_dict_pairs(archive: Archive, module: Any) -> list[tuple[str, str]]:
    """Pair archive keys with target state-dict keys by name; list every disagreement."""
    target = module.state_dict()
    problems = []
    for key in target:
        if key not in archive.tensors:
            problems.append(f"missing key {key!r} (the target has it, the archive does not)")
    for key, array in archive.tensors.items():
        if key not in target:
            problems.append(f"unexpected key {key!r} (the archive has it, the target does not)")
            continue
        problems += _compare(key, array.shape, dtype_name(array.dtype), target[key])
    if problems:
        raise _mismatch(problems, archive, module)
    return [(key, key) for key in archive.tensors]


def _compare(label: str, shape: tuple[int, ...], dtype: str, tensor: Any) -> list[str]:
    problems = []
    if tuple(shape) != tuple(tensor.shape):
        problems.append(
            f"{label}: shape {list(shape)} in the archive, {list(tensor.shape)} in the target"
        )
    target_dtype = torch_dtype_name(tensor.dtype)
    if dtype != target_dtype:
        problems.append(
            f"{label}: dtype {dtype} in the archive, {target_dtype} in the target (weightio "
            "never casts; convert the target with module.to(dtype) first)"
        )
    return problems


def _read_target(archive: Archive, module: Any) -> Archive:
    """Read the target's structure; the archive's input shapes help if tracing needs them."""
    try:
        return read_torch_module(module)
    except TraceError:
        spec_inputs = archive.spec.inputs
        if not spec_inputs or any(d is None for i in spec_inputs for d in i.shape):
            raise
    torch = torch_module("load_into_torch")
    examples = tuple(
        torch.zeros((1, *inp.shape), dtype=torch_dtype_for(numpy_dtype(inp.dtype)))
        for inp in spec_inputs
    )
    return read_torch_module(module, example_input=examples)


def _layer_pairs(archive: Archive, module: Any) -> list[tuple[str, str]]:
    """Pair parameterised layers by order (``frameworks.pairing``); key pairs to copy."""
    target = _read_target(archive, module)
    pairs, problems = pair_layers(archive.spec.layers, target.spec.layers)
    if problems:
        raise _mismatch(problems, archive, module)
    return [
        (ref.key, t.tensor_refs()[param].key)
        for a, t in pairs
        for param, ref in a.tensor_refs().items()
    ]


def load_into_torch(archive: Archive, module: Any) -> None:
    """Copy the archive's weights into ``module`` in place, bit-exact, or change nothing.

    Args:
        archive: A weights-only archive (pairs by state-dict key) or a full one (pairs the
            layers that have weights by order, requiring equal kinds, shapes and dtypes).
        module: The target ``nn.Module``.

    Raises:
        StructureMismatchError: listing every missing, unexpected, mis-shaped or mis-typed
            tensor, or the first layers whose kinds differ.
    """
    torch = torch_module("load_into_torch")
    if not archive.spec.weights_only:
        from weightio.frameworks.torch.write.conv import prepare

        archive = prepare(archive)  # a Keras flatten's order folded into the next Linear
        from weightio.layouts.flow import unfolded_flattens

        stuck = unfolded_flattens(archive, lambda layer, tag: "channels_first")
        if stuck:
            raise StructureMismatchError(
                f"flatten {stuck[0]!r} flattens channels-last (Keras order) and its dense "
                "weights could not be reordered for nn.Flatten (no dense right after it, or a "
                "free input size); use to_torch(archive) instead, which keeps the order exactly",
                file=archive.path, layer=stuck[0],
            )
    if archive.spec.weights_only:
        pairs = _state_dict_pairs(archive, module)
    else:
        pairs = _layer_pairs(archive, module)
    state = module.state_dict()
    with torch.no_grad():
        for source, target in pairs:
            state[target].copy_(numpy_to_tensor(archive.tensors[source]))
