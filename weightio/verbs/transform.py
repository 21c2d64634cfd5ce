"""``weightio.fold``, ``weightio.prune``, ``weightio.quantize``: transforms of an archive's
weights, each one measured against the original (``weightio.transforms``).

Each verb opens its source (an ``Archive``, a path to one, or anything ``weightio.read``
accepts), checks its options before any work, runs the transform, runs the original and the
result on the same seeded probes through the numpy runtime, and returns a ``TransformResult``
(``.archive`` not yet saved; ``weightio.save`` it). With ``max_change`` a result whose outputs
moved more than that (relative to the output's scale) is refused with ``VerificationError``.
"""

from __future__ import annotations

import os
from typing import Any

from weightio.errors import WeightioError
from weightio.format.archive import Archive, plain
from weightio.transforms.fold import fold_archive
from weightio.transforms.importance import Importance, first_layer_importance, gradient_importance
from weightio.transforms.measure import TransformResult, check_measure_options, stored_size
from weightio.transforms.prune import check_prune_options, prune_archive
from weightio.transforms.quantize import check_quantize_options, quantize_archive
from weightio.transforms.weight_norm import weight_norm_archive

__all__ = ["Importance", "TransformResult", "fold", "importance", "prune", "quantize", "weight_norm"]


def open_source(source: Any, options: dict[str, Any]) -> tuple[Archive, Any]:
    """The archive of ``source`` and the file to name in errors (``None`` for live models)."""
    if isinstance(source, Archive):
        return source, source.path
    from weightio.verbs.read import read

    return read(source, **options), source if isinstance(source, (str, os.PathLike)) else None


def _run(source: Any, options: dict[str, Any], transform: Any, **kwargs: Any) -> TransformResult:
    archive, file = open_source(source, options)
    try:
        # a quantised archive is transformed decoded; fold makes weight norm plain itself
        keep = ("weight_norm",) if transform is fold_archive else ()
        result = transform(plain(archive, keep=keep), **kwargs)
    except WeightioError as exc:
        raise (exc.with_file(file) if file is not None else exc) from None
    if archive.spec.encoded and not result.archive.spec.encoded:
        result.size_before = stored_size(archive)
        schemes = {ref.encoding.scheme for _, _, ref in archive.spec.tensor_refs() if ref.encoding}
        if "linear" in schemes:
            result.notes.append("the source's quantised weights were decoded first and are stored as "
                                "floats now; quantize the result to store them in 8 bits again")
        if "weight_norm" in schemes and transform is not fold_archive:
            result.notes.append("the source's weights in weight-norm form were made plain first "
                                "(w = g * v / ||v||); weightio.weight_norm the result to store g, v again")
    return result


def fold(
    source: Any,
    *,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
    **read_options: Any,
) -> TransformResult:
    """Fold batch norms into the conv/dense before them, remove dropout and identity layers,
    and turn torch weight norm (``weight_g``/``weight_v``, ``parametrizations.weight.original0/1``)
    into plain weights.

    Args:
        source: An ``Archive``, a path to one, or anything ``weightio.read`` accepts.
        seed, samples: The probe inputs the original and the result are compared on.
        max_change: Refuse (``VerificationError``) when the worst output change relative to
            the output's scale exceeds this; default: never.
        **read_options: Passed to ``weightio.read`` (``trust_pickle=True``, ``key=`` …).

    Returns:
        A ``TransformResult``: the archive, one row per change, sizes, the measurement.
    """
    check_measure_options(seed, samples, max_change)
    return _run(source, read_options, fold_archive, seed=seed, samples=samples, max_change=max_change)


def prune(
    source: Any,
    sparsity: float,
    *,
    structured: bool = False,
    scope: str = "layer",
    norm: str = "l1",
    include: Any = None,
    exclude: Any = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
    **read_options: Any,
) -> TransformResult:
    """Prune weights to ``sparsity`` (a share from 0 to below 1).

    Args:
        source: An ``Archive``, a path to one, or anything ``weightio.read`` accepts.
        sparsity: The share of weights (unstructured) or of filters/units per layer
            (structured) to remove.
        structured: Remove whole conv filters / dense units ranked by ``norm``, shrinking the
            layer and what reads it (a smaller model), instead of zeroing single weights.
        scope: Unstructured only: ``"layer"`` (each layer to ``sparsity``) or ``"global"``
            (the smallest weights of all selected layers together).
        norm: Structured only: rank filters by their ``"l1"`` or ``"l2"`` norm.
        include, exclude: Layer names, globs of names or kinds (``"conv"``) to prune, or not;
            default: every conv and dense layer.
        seed, samples, max_change, **read_options: as for ``weightio.fold``.

    Returns:
        A ``TransformResult`` with one row per pruned layer: sparsity, parameters before/after
        (and units before/after when structured).
    """
    check_prune_options(sparsity, scope, norm, structured)
    check_measure_options(seed, samples, max_change)
    return _run(source, read_options, prune_archive, sparsity=sparsity, structured=structured,
                scope=scope, norm=norm, include=include, exclude=exclude, seed=seed,
                samples=samples, max_change=max_change)


def quantize(
    source: Any,
    dtype: str = "int8",
    *,
    symmetric: bool = True,
    per_channel: bool = True,
    include: Any = None,
    exclude: Any = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
    **read_options: Any,
) -> TransformResult:
    """Store the conv/dense weights in 8 bits: ``"int8"`` (symmetric, or asymmetric with a zero
    point), ``"float8_e4m3"`` or ``"float8_e5m2"``, with one float32 scale per output channel
    (or per tensor). Biases and norms stay float.

    The archive records each as an encoded parameter (format 1.2, docs/format.md): the
    integers, the scale and the zero point. Every reader decodes it the same way
    (``weightio.format.encoding.decode``), so ``weightio.run``, ``to_torch`` and ``to_keras``
    compute with the dequantised weights the measurement reports.

    Args:
        source, include, exclude, seed, samples, max_change, **read_options: as for
            ``weightio.prune``.

    Returns:
        A ``TransformResult`` with one row per tensor (bytes before/after, worst weight error).
    """
    check_quantize_options(dtype, symmetric)
    check_measure_options(seed, samples, max_change)
    return _run(source, read_options, quantize_archive, scheme=dtype, symmetric=symmetric,
                per_channel=per_channel, include=include, exclude=exclude, seed=seed,
                samples=samples, max_change=max_change)


def weight_norm(
    source: Any,
    *,
    include: Any = None,
    exclude: Any = None,
    seed: int = 0,
    samples: int = 8,
    max_change: float | None = None,
    **read_options: Any,
) -> TransformResult:
    """Put dense/conv weights in weight-norm form (the reverse of ``fold``'s): each weight ``w``
    is stored as ``v = w`` and ``g = ||w||`` over all axes but the output axis (torch's
    ``weight_norm(dim=0)``), an encoded parameter of scheme ``weight_norm`` (docs/format.md).
    ``to_torch`` (and ``.pt2``/``.pt``) then builds those layers with
    ``torch.nn.utils.parametrizations.weight_norm`` (keys ``parametrizations.weight.original0``
    / ``original1``); the runtime and the Keras writer recombine ``w = g * v / ||v||``.
    ``weightio.fold`` makes them plain again.

    Args:
        source, include, exclude, seed, samples, max_change, **read_options: as for
            ``weightio.prune`` (default: every dense and conv layer).

    Returns:
        A ``TransformResult`` with one row per weight (its ``g`` key, the worst weight error).

    Raises:
        UnsupportedLayerError: a weights-only source (no layer kinds to choose weights by).
    """
    check_measure_options(seed, samples, max_change)
    return _run(source, read_options, weight_norm_archive, include=include, exclude=exclude,
                seed=seed, samples=samples, max_change=max_change)


def importance(
    source: Any, *, gradients: bool = False, seed: int = 0, samples: int = 8, **read_options: Any
) -> Importance:
    """How much of the first dense/conv layer's absolute weight each input meets: per input
    feature (dense; pixels of each channel when it reads a flattened image) or per input channel
    (conv). ``.ranked()``/``.table()`` rank them; ``weightio.report.plots.importance_png`` draws
    them (a heat map for image inputs). Works on archives from any framework, weights-only too.

    Args:
        gradients: Rank every input element instead by the mean ``|∂f/∂x|`` over ``samples``
            seeded probe inputs (``seed``), ``f`` the top-class value of the first output
            (``[batch, classes]`` outputs) or the sum of its values, by central differences
            through the numpy runtime in float64 (``weightio.transforms.importance``).

    Raises:
        UnsupportedLayerError: no dense or conv layer, nor any weight of two or more axes;
            with ``gradients``, a weights-only archive or a model without one float input.
    """
    check_measure_options(seed, samples, None)
    archive, file = open_source(source, read_options)
    try:
        if gradients:
            return gradient_importance(plain(archive), seed=seed, samples=samples)
        return first_layer_importance(plain(archive))
    except WeightioError as exc:
        raise (exc.with_file(file) if file is not None else exc) from None
