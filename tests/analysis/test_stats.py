"""Chunked statistics and comparisons agree with plain numpy on whole arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightio.analysis import stats
from weightio.progress import byte_progress


@pytest.fixture(params=[7, 1 << 20], ids=["tiny-chunks", "default-chunks"])
def chunk(request, monkeypatch) -> int:
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", request.param)
    return request.param


def test_tensor_stats_match_numpy(chunk: int, rng: np.random.Generator) -> None:
    a = (rng.standard_normal((37, 11)) * 3 + 100).astype("f4")
    a[0, :5] = 0
    a[3, 3] = np.nan
    a[4, 4] = np.inf
    a[5, 5] = -np.inf
    s = stats.tensor_stats(a)
    finite = a[np.isfinite(a)].astype(np.float64)
    assert s.nan_count == 1 and s.inf_count == 2
    assert s.zero_fraction == 5 / a.size
    assert math.isclose(s.mean, finite.mean(), rel_tol=1e-12)
    assert math.isclose(s.std, finite.std(), rel_tol=1e-9)
    assert s.min == finite.min() and s.max == finite.max()
    assert math.isclose(s.l2, float(np.linalg.norm(finite)), rel_tol=1e-12)


def test_stats_of_empty_and_all_nan_and_ints() -> None:
    empty = stats.tensor_stats(np.zeros((0, 3), "f4"))
    assert empty.mean is None and empty.l2 == 0 and empty.zero_fraction == 0
    nan = stats.tensor_stats(np.full(4, np.nan, "f2"))
    assert nan.mean is None and nan.nan_count == 4
    ints = stats.tensor_stats(np.arange(10, dtype="i8"))
    assert ints.mean == 4.5 and ints.min == 0 and ints.max == 9


def test_compare_matches_numpy(chunk: int, rng: np.random.Generator) -> None:
    a = rng.standard_normal(1000)
    b = a.copy()
    b[::10] += 1e-3
    c = stats.compare(a, b)
    d = b - a
    assert c.changed_count == 100 and c.fraction_changed == 0.1
    assert math.isclose(c.max_abs_diff, float(np.abs(d).max()), rel_tol=1e-12)
    assert math.isclose(c.relative_l2, float(np.linalg.norm(d) / np.linalg.norm(a)), rel_tol=1e-12)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert math.isclose(c.cosine_similarity, cosine, rel_tol=1e-12)
    assert stats.compare(a, b, atol=2e-3).changed_count == 0
    assert stats.compare(a, b, rtol=1e9).changed_count == 0


def test_compare_non_finite_and_zero_norm() -> None:
    a = np.array([np.nan, np.inf, 1.0, np.nan], "f4")
    b = np.array([np.nan, np.inf, 1.0, 2.0], "f4")
    c = stats.compare(a, b)
    assert c.changed_count == 1 and c.nonfinite_mismatches == 1 and c.max_abs_diff == 0.0
    z = stats.compare(np.zeros(3), np.ones(3))
    assert z.relative_l2 is None and z.cosine_similarity is None and z.changed_count == 3
    assert stats.compare(np.zeros(3), np.zeros(3)).relative_l2 == 0.0


def test_progress_bar_draws_for_big_passes(monkeypatch, capsys) -> None:
    import weightio.progress as progress

    monkeypatch.setattr(progress, "THRESHOLD_BYTES", 10)
    monkeypatch.setenv("FORCE_COLOR", "1")  # stderr is not a terminal under pytest
    seen = []
    with byte_progress("x", 100, enabled=True) as advance:
        advance(50)
        advance(50)
        seen.append(True)
    with byte_progress("x", 5, enabled=True) as advance:  # below the threshold: a no-op
        advance(5)
    assert seen and capsys.readouterr().out == ""  # the bar never writes to stdout
