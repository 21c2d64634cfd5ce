"""``weightio.diff``: compare two checkpoints, whatever each one is, layer by layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from weightio.analysis.diff import DiffReport, diff_archives
from weightio.format.archive import Archive
from weightio.format.single import open_archive_file
from weightio.options import check_tolerance


def diff(
    a: Any, b: Any, *, atol: float = 0.0, rtol: float = 0.0, progress: bool = False,
    **options: Any,
) -> DiffReport:
    """Compare two checkpoints layer by layer and tensor by tensor.

    Args:
        a: The reference ("before"): anything ``weightio.read`` accepts.
        b: The other ("after").
        atol: Absolute tolerance: an element is unchanged when ``|b - a| <= atol + rtol * |a|``.
        rtol: Relative tolerance, as above. Both default to 0: identical means bit-equal values
            (NaN matching NaN).
        progress: Draw a progress bar on stderr when the pass reads more than a few hundred MB.
        **options: Reader options (``key=``, ``architecture=``, ``trust_pickle=``) for each of
            ``a`` and ``b`` that is not a weightio archive (an archive takes none).

    Returns:
        A ``DiffReport``; ``report.identical`` is True when every tensor is identical within
        tolerance. ``report.to_json()`` gives the documented JSON shape.
    """
    atol = check_tolerance("atol", atol)
    rtol = check_tolerance("rtol", rtol)
    archive_a = _open(a, options)
    archive_b = _open(b, options)
    return diff_archives(
        archive_a, archive_b, source_a=a, source_b=b, atol=atol, rtol=rtol, progress=progress
    )


def _open(source: Any, options: dict[str, Any]) -> Archive:
    """``weightio.read(source, **options)``; a weightio archive opens directly (no table of
    readers) and takes no options.
    """
    if isinstance(source, Archive):
        return source
    if isinstance(source, (str, os.PathLike)):
        archive = open_archive_file(source if isinstance(source, str) else Path(source))
        if archive is not None:
            return archive
    from weightio.verbs.read import read

    return read(source, **options)
