"""Copy an archive's weights into an existing ``torch.nn.Module``.

Two ways to pair tensors: a weights-only archive (a bare state dict) pairs by state-dict key;
a full archive pairs the target's parameterised layers with the archive's by order, so weights
read from another framework (other layer names) land in the right place. Either way every
problem is collected and reported at once, nothing is copied unless everything fits (or, with
``strict=False``, what fits is copied and the rest reported), and no dtype is ever converted.
``rename=`` pairs a full archive by (renamed) key too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from weightio.errors import StructureMismatchError, TraceError
from weightio.format.archive import Archive
from weightio.frameworks.pairing import LoadReport, pair_layers
from weightio.frameworks.torch.common import (
    numpy_to_tensor,
    torch_dtype_for,
    torch_dtype_name,
    torch_module,
)
from weightio.frameworks.torch.read.trace import read_torch_module
from weightio.spec.dtypes import dtype_name, numpy_dtype

#: How ``rename=`` maps archive keys to the target's: prefixes, or a function of the key.
Rename = Mapping[str, str] | Callable[[str], str | None]


def _mismatch(problems: list[str], archive: Archive, module: Any) -> StructureMismatchError:
    shown = "; ".join(problems[:20])
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return StructureMismatchError(
        f"the archive does not fit {type(module).__name__}: {shown}{more}. Nothing was copied; "
        "build the target with the same layers, shapes and dtypes as the archive",
        file=archive.path,
    )


def _renamed(key: str, rename: Rename | None) -> str | None:
    """The target key for an archive key: ``rename`` maps prefixes (longest first) or is a
    function (``None`` drops the tensor).
    """
    if rename is None:
        return key
    if callable(rename):
        return rename(key)
    for old in sorted(rename, key=len, reverse=True):
        if key.startswith(old):
            return rename[old] + key[len(old):]
    return key


def _state_dict_pairs(
    archive: Archive, module: Any, rename: Rename | None, report: LoadReport
) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair archive keys (renamed) with target state-dict keys by name; the pairs that fit and
    every disagreement, noted in ``report`` as skipped or missing.
    """
    target = module.state_dict()
    problems = []
    pairs = []
    for key, array in archive.tensors.items():
        wanted = _renamed(key, rename)
        if wanted is None:
            report.skipped.append(f"tensor {key!r}: dropped by rename")
            continue
        shown = repr(key) if wanted == key else f"{key!r} (as {wanted!r})"
        if wanted not in target:
            problems.append(f"unexpected key {shown} (the archive has it, the target does not)")
            report.skipped.append(f"tensor {shown}: the target has no such tensor")
            continue
        found = _compare(wanted, array.shape, dtype_name(array.dtype), target[wanted])
        if found:
            problems += found
            report.skipped.append(f"tensor {shown}: " + "; ".join(found))
            continue
        pairs.append((key, wanted))
    given = {wanted for _, wanted in pairs}
    for key in target:
        if key not in given:
            if not any(key == _renamed(k, rename) for k in archive.tensors):
                problems.append(f"missing key {key!r} (the target has it, the archive does not)")
            report.missing.append(key)
    return pairs, problems


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
    torch = torch_module("load_into")
    examples = tuple(
        torch.zeros((1, *inp.shape), dtype=torch_dtype_for(numpy_dtype(inp.dtype)))
        for inp in spec_inputs
    )
    return read_torch_module(module, example_input=examples)


def _layer_pairs(
    archive: Archive, module: Any, report: LoadReport
) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair parameterised layers by order (``frameworks.pairing``); key pairs to copy, and the
    problems (noted in ``report`` as skipped and missing).
    """
    target = _read_target(archive, module)
    pairing = pair_layers(archive.spec.layers, target.spec.layers)
    report.skipped += pairing.skipped
    for layer in pairing.missing:
        report.missing += [ref.key for ref in layer.tensor_refs().values()]
    pairs = [
        (ref.key, t.tensor_refs()[param].key)
        for a, t in pairing.pairs
        for param, ref in a.tensor_refs().items()
    ]
    return pairs, pairing.problems


def load_into_torch(
    archive: Archive, module: Any, *, strict: bool = True, rename: Rename | None = None
) -> LoadReport:
    """Copy the archive's weights into ``module`` in place, bit-exact.

    Args:
        archive: A weights-only archive (pairs by state-dict key) or a full one (pairs the
            layers that have weights by order, requiring equal kinds, shapes and dtypes).
        module: The target ``nn.Module``.
        strict: ``True``: everything must fit, or nothing is copied. ``False``: what fits is
            copied, the rest skipped, and the report says what and why (a backbone into a model
            with a new head).
        rename: Pair by state-dict key, with the archive's keys renamed: a mapping of prefixes
            (``{"backbone.": ""}``, longest first) or a function of the key (``None`` drops it).

    Returns:
        A ``LoadReport``: the module, the keys loaded, what was skipped, what was left missing.

    Raises:
        StructureMismatchError: (strict) listing every missing, unexpected, mis-shaped or
            mis-typed tensor, or the first layers whose kinds differ; nothing was copied.
    """
    torch = torch_module("load_into")
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
    report = LoadReport(module)
    if archive.spec.weights_only or rename is not None:
        pairs, problems = _state_dict_pairs(archive, module, rename, report)
    else:
        pairs, problems = _layer_pairs(archive, module, report)
    if strict and problems:
        raise _mismatch(problems, archive, module)
    state = module.state_dict()
    with torch.no_grad():
        for source, target in pairs:
            state[target].copy_(numpy_to_tensor(archive.tensors[source]))
    report.loaded = [target for _, target in pairs]
    return report
