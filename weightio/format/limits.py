"""Shapes read from files, checked against what numpy can represent before any array is made.

A header may declare a zero-size tensor with an absurd dimension (``[0, 2**62]``: no bytes, so
every byte-count check passes) or more dimensions than numpy supports; numpy then refuses with a
bare ``ValueError`` when the (empty) array is built. Readers call ``check_shape`` first so that
such a file gets a typed error naming it.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from weightio.errors import MalformedFileError, ResourceLimitError


def _max_dims() -> int:
    """Most dimensions numpy arrays may have (64 since numpy 2, 32 before), without importing it.

    numpy costs ~0.1 s to import and reading a header needs none of it, so its major version is
    read from ``numpy/version.py`` unless numpy is loaded already (32, the lower bound, if unsure).
    """
    numpy = sys.modules.get("numpy")
    text = getattr(numpy, "__version__", None)
    if text is None:
        try:
            spec = find_spec("numpy")
            source = Path(spec.origin).with_name("version.py").read_text()  # type: ignore[union-attr, arg-type]
            found = re.search(r"""^version\s*=\s*["'](\d+)""", source, re.MULTILINE)
            text = found.group(1) if found else None
        except (OSError, ValueError, AttributeError, TypeError):  # pragma: no cover
            text = None
    try:
        return 64 if text is not None and int(str(text).split(".")[0]) >= 2 else 32
    except ValueError:  # pragma: no cover
        return 32


#: Most dimensions numpy arrays may have (64 since numpy 2, 32 before).
MAX_DIMS = _max_dims()


def check_shape(
    shape: Sequence[int],
    itemsize: int,
    *,
    file: object | None = None,
    tensor: str | None = None,
    layer: str | None = None,
) -> None:
    """Raise ``MalformedFileError`` unless numpy can build an array of ``shape``.

    Args:
        shape: Non-negative Python ints, as the file states them.
        itemsize: Bytes per element.
    """
    if len(shape) > MAX_DIMS:
        raise MalformedFileError(
            f"shape has {len(shape)} dimensions; weightio reads at most {MAX_DIMS}",
            file=file, tensor=tensor, layer=layer,
        )
    if math.prod(d for d in shape if d) * max(itemsize, 1) > sys.maxsize:
        raise MalformedFileError(
            f"shape {list(shape)} is larger than any array can be (even when empty); the file "
            "is corrupt or hostile",
            file=file, tensor=tensor, layer=layer,
        )


#: How far a strided view may claim more bytes than its storage holds. ``torch.save`` keeps
#: views as they are, and stride 0 broadcasts (``expand``) one stored value along an axis: four
#: stored bytes can describe 64 GiB. weightio materialises a tensor when it writes or compares it,
#: so the bytes a view claims beyond its storage's own are bounded by this budget.
MAX_VIEW_EXPANSION_BYTES = 256 * 1024 * 1024


def check_view(
    shape: Sequence[int],
    strides: Sequence[int],
    itemsize: int,
    storage_bytes: int,
    *,
    file: object | None = None,
    tensor: str | None = None,
) -> None:
    """Raise ``ResourceLimitError`` if a view of ``storage_bytes`` claims too many more.

    The caller has checked that the view stays inside its storage; this bounds the logical
    size (``prod(shape) * itemsize``) to the storage's bytes plus ``MAX_VIEW_EXPANSION_BYTES``,
    before anything is allocated.
    """
    logical = math.prod(shape) * max(itemsize, 1)
    if logical > storage_bytes + MAX_VIEW_EXPANSION_BYTES:
        raise ResourceLimitError(
            f"a view of shape {list(shape)} and strides {list(strides)} claims {logical:,} bytes "
            f"from a storage of {storage_bytes:,} (overlapping strides, e.g. stride 0, repeat its "
            f"values); weightio materialises at most {MAX_VIEW_EXPANSION_BYTES:,} bytes beyond a "
            "storage's own. Re-save the tensor with .contiguous() (or .clone()) if it is meant",
            file=file, tensor=tensor,
        )
