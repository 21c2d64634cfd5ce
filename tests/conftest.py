"""Shared test helpers: output comparison with the project's stated float32 tolerance."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def assert_close(reference: np.ndarray, other: np.ndarray, *, tol: float = 1e-5) -> None:
    """max |a - b| <= tol * max(1, max |reference|): float32 agreement scaled to the output."""
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    assert reference.shape == other.shape, (reference.shape, other.shape)
    scale = max(1.0, float(np.max(np.abs(reference), initial=0.0)))
    worst = float(np.max(np.abs(reference - other), initial=0.0))
    assert worst <= tol * scale, f"worst abs diff {worst:.3g} > {tol:g} * scale {scale:.3g}"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
