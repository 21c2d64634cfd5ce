"""The streamed diff engine gives the figures of the plain one (``stats.compare``) on every path.

Paths: bytes equal (no float maths) or not, NaN/Inf (exact path), blocks and pieces split across
threads, tensors read from the file (``preadv``) or from memory, strided views, complex, bf16,
integers, mixed dtypes, and tolerances.
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import weightio
from weightio.analysis import streamcompare
from weightio.analysis.stats import compare
from weightio.analysis.streamcompare import compare_pairs


def _same(got, want) -> None:  # type: ignore[no-untyped-def]
    g, w = got.model_dump(), want.model_dump()
    for key, value in w.items():
        other = g[key]
        if isinstance(value, float) and isinstance(other, float):
            assert other == pytest.approx(value, rel=1e-12, abs=1e-300, nan_ok=True), key
        else:
            assert other == value, key


def _check(a: np.ndarray, b: np.ndarray, **tol: float) -> None:
    got = next(compare_pairs([(a, b)], **tol))
    with np.errstate(over="ignore", invalid="ignore"):
        want = compare(a, b, **tol)
    _same(got, want)


@pytest.fixture()
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 4 KiB and pieces of 3 blocks: every boundary is crossed on small tensors."""
    monkeypatch.setattr(streamcompare, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(streamcompare, "SUB_ELEMENTS", 256)  # a divisor of every block
    monkeypatch.setattr(streamcompare, "PIECE_BYTES", 3 * 4096 + 100)
    monkeypatch.setattr(streamcompare, "_SCRATCH", streamcompare._Scratch())


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", ["f4", "f2", "f8", "i8", "u1", "?", "c8", "bf16"])
def test_figures_match_the_plain_compare(dtype: str, small_pieces: None) -> None:
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bf16" else np.dtype(dtype)
    raw = RNG.standard_normal(10_000) * 3
    if dt.kind == "c":
        a = (raw + 1j * RNG.standard_normal(10_000)).astype(dt)
    else:
        a = raw.astype(dt)
    b = a.copy()
    b[5000:5100] = (raw[5000:5100] + 1).astype(dt) if dt.kind != "c" else b[5000:5100] + 1
    _check(a, a.copy())  # bytes equal everywhere
    _check(a, b)  # one block differs: the rest stays on the bit-pattern path
    _check(a, b, atol=0.5)
    _check(a, b, rtol=0.1, atol=0.01)


def test_nan_inf_and_signed_zero(small_pieces: None) -> None:
    a = RNG.standard_normal(5000).astype("f4")
    a[[3, 700, 4000]] = [np.nan, np.inf, -np.inf]
    b = a.copy()
    _check(a, b)  # equal bytes with NaN/Inf inside: the exact path on identical data
    b[700] = -np.inf  # inf against -inf: a non-finite mismatch
    b[10] = np.nan
    _check(a, b)
    zero = np.zeros(3000, "f4")
    negative = -zero  # other bytes, same values: identical
    got = next(compare_pairs([(zero, negative)]))
    assert got.changed_count == 0 and got.max_abs_diff == 0.0
    _check(zero, negative)
    payload = np.full(2000, np.nan, "f4")
    other = payload.view("u4").copy()
    other[::2] |= 1  # other NaN payloads: still NaN against NaN
    _check(payload, other.view("f4"))
    assert next(compare_pairs([(payload, other.view("f4"))])).changed_count == 0
    big = np.full(100, 1e200)  # squares overflow float64: the exact path
    _check(big, big * 1.5)


def test_mixed_dtypes_strided_and_empty(small_pieces: None) -> None:
    a = RNG.standard_normal((60, 90)).astype("f4")
    _check(a, a.astype("f2"))  # dtype_changed: no bit-pattern shortcut
    _check(a.T, a.T.astype("f8"))  # strided views, copied block by block
    _check(a.T, np.ascontiguousarray(a.T) + 1)
    c = (a + 1j * a).astype("c8")
    _check(c.T, c.T * 2)
    _check(np.zeros(0, "f4"), np.zeros(0, "f4"))


def test_mapped_tensors_compare_and_give_their_pages_back(tmp_path: Path, small_pieces: None) -> None:
    rng = np.random.default_rng(3)
    arrays = {f"t{i}": rng.standard_normal(size).astype("f4") for i, size in enumerate([1, 999, 12_345, 40_000])}
    arrays["h"] = rng.standard_normal(777).astype(ml_dtypes.bfloat16)
    changed = {k: (v if k in ("t0", "t2") else (v.astype("f8") + 0.5).astype(v.dtype)) for k, v in arrays.items()}
    weightio.save(weightio.read(arrays), tmp_path / "a.safetensors")
    weightio.save(weightio.read(changed), tmp_path / "b.safetensors")
    a, b = weightio.load(tmp_path / "a.safetensors"), weightio.load(tmp_path / "b.safetensors")
    pairs = [(a.tensors[k], b.tensors[k]) for k in a.tensors]
    released: list[int] = []
    real = streamcompare.release
    streamcompare.release = lambda array: (released.append(array.nbytes), real(array))  # type: ignore[assignment]
    try:
        for (x, y), got in zip(pairs, compare_pairs(pairs)):
            _same(got, compare(x, y))
    finally:
        streamcompare.release = real  # type: ignore[assignment]
    assert sum(released) >= 2 * sum(x.nbytes for x, _ in pairs)  # every block of both sides (and edges)
    report = weightio.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    statuses = {e.name: e.status for e in report.entries}
    assert statuses == {"t0": "identical", "t2": "identical", "t1": "changed", "t3": "changed", "h": "changed"}


def test_diff_of_different_shapes_and_dtypes() -> None:
    a = {"w": np.ones((4, 3), "f4"), "v": np.ones(5, "f4"), "u": np.arange(6, dtype="f4")}
    b = {"w": np.ones((3, 4), "f4"), "v": np.ones(5, "f2"), "u": np.arange(6, dtype="f4")}
    report = weightio.diff(a, b)
    entries = {e.name: e for e in report.entries}
    assert entries["w"].status == "shape_changed" and entries["w"].numel is None
    assert entries["v"].status == "dtype_changed" and entries["v"].changed_count == 0
    assert entries["u"].status == "identical" and entries["u"].cosine_similarity == pytest.approx(1.0)
    assert math.isclose(entries["u"].norm_a, float(np.linalg.norm(np.arange(6))), rel_tol=1e-15)


def test_pieces_merge_in_order_whatever_the_threads() -> None:
    """Figures do not depend on the number of workers (pieces merge in a fixed order)."""
    a = RNG.standard_normal(300_000).astype("f4")
    b = (a + RNG.standard_normal(300_000).astype("f4") * 1e-3).astype("f4")
    one = next(compare_pairs([(a, b)], workers=1))
    four = next(compare_pairs([(a, b)], workers=4))
    assert one == four
