"""Which tensors hold NaN or +-inf: weights that are data, not errors, but worth saying out loud.

weightio archives NaN and infinities bit-exactly (same bit pattern, NaN payload and sign
included), never "fixes" them. A model whose weights hold them computes NaN wherever they reach,
so ``inspect`` names those tensors and ``convert`` says so next to its verification figures
(an output that is NaN in every witness at the same places is an agreement, but a probe whose
outputs are all NaN proves nothing about the conversion, and fails). The scan reads tensors
chunk by chunk, so memory stays bounded on memory-mapped archives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weightio.format.archive import Archive
from weightio.spec.dtypes import FLOAT_DTYPE_NAMES

__all__ = ["NonFinite", "count_nonfinite", "describe_nonfinite", "nonfinite_note", "scan_nonfinite"]

_CHUNK = 1 << 22


@dataclass(frozen=True)
class NonFinite:
    """Counts of non-finite values in one tensor."""

    key: str
    nan: int
    posinf: int
    neginf: int

    def describe(self) -> str:
        """``0.weight (1 NaN, 2 +inf)``."""
        parts = [f"{n} {what}" for n, what in ((self.nan, "NaN"), (self.posinf, "+inf"),
                                               (self.neginf, "-inf")) if n]
        return f"{self.key} ({', '.join(parts)})"


def count_nonfinite(array: np.ndarray) -> tuple[int, int, int]:
    """(NaN, +inf, -inf) in ``array``, chunk by chunk."""
    flat = np.asarray(array).reshape(-1)
    nan = posinf = neginf = 0
    for start in range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK]
        if part.dtype not in (np.float32, np.float64):  # f16/bf16/f8 widen exactly; f64
            part = part.astype(np.float32)  # must not: 1e300 would turn into +inf
        bad = ~np.isfinite(part)
        if not bad.any():
            continue
        values = part[bad]
        nan += int(np.isnan(values).sum())
        posinf += int((values > 0).sum())
        neginf += int((values < 0).sum())
    return nan, posinf, neginf


def scan_nonfinite(archive: Archive) -> list[NonFinite]:
    """Every float tensor of ``archive`` holding NaN or +-inf, in spec order."""
    found = []
    for _, _, ref in archive.spec.unique_tensor_refs():
        if ref.dtype not in FLOAT_DTYPE_NAMES:
            continue
        nan, posinf, neginf = count_nonfinite(archive.tensors[ref.key])
        if nan or posinf or neginf:
            found.append(NonFinite(ref.key, nan, posinf, neginf))
    return found


def describe_nonfinite(found: list[NonFinite], *, limit: int = 6) -> str:
    """``0.weight (1 NaN, 1 +inf); 2.weight (3 NaN)`` (the first ``limit`` tensors)."""
    text = "; ".join(item.describe() for item in found[:limit])
    if len(found) > limit:
        text += f"; and {len(found) - limit} more tensor(s)"
    return text


def nonfinite_note(found: list[NonFinite]) -> str:
    """The sentence a failed verification adds when the weights hold NaN/inf (else empty)."""
    if not found:
        return ""
    return (
        f". Note: the weights hold non-finite values ({describe_nonfinite(found)}); they make "
        "every output they reach NaN or inf, and an output that is NaN/inf everywhere cannot "
        "show the conversion is right. Fix those weights (`weightio inspect --stats` lists "
        "them), or convert with --no-verify (verify=False) to copy them bit-exactly as they are"
    )
