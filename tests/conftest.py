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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False,
        help="also run tests marked slow (model zoo); WEIGHTIO_RUNSLOW=1 does the same",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.slow`` tests unless ``--runslow`` or ``WEIGHTIO_RUNSLOW=1``."""
    if config.getoption("--runslow") or os.environ.get("WEIGHTIO_RUNSLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or WEIGHTIO_RUNSLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _models_report():
    """At the session's end, merge the model tests' rows into ``WEIGHTIO_MODELS_REPORT``
    (tests/models_report.py); nothing happens when it is not set."""
    yield
    import models_report

    models_report.write()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    """Print the bad-input battery's count (RELIABILITY.md): one test per item."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_battery.py::test_battery[" in nodeid and getattr(report, "when", "call") in (
                "call", "setup"
            ):
                if outcome == "passed" and report.when != "call":
                    continue
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        total = sum(counts.values())
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        terminalreporter.write_line(f"bad-input battery: {total} items ({detail})")


def keras_view(spec: object, runner: object) -> object:
    """Wrap ``runner`` (canonical arrays in and out: ``weightio.run``, a torch module) to take
    and return Keras's own arrays: feature-map inputs and outputs (by their spec form) moved
    from channels-last to channels-first before, and back after.
    """
    from weightio.layouts.flow import CHANNELS, tensor_layouts
    from weightio.layouts.transforms import to_channels_first, to_channels_last

    tags = tensor_layouts(spec)  # type: ignore[arg-type]
    ins = [tags[inp.name] == CHANNELS for inp in spec.inputs]  # type: ignore[attr-defined]
    outs = [tags[out.layer] == CHANNELS for out in spec.outputs]  # type: ignore[attr-defined]

    def run(xs: list[np.ndarray]) -> list[np.ndarray]:
        moved = [np.ascontiguousarray(to_channels_first(x)) if c else x for x, c in zip(xs, ins)]
        ys = runner(moved)  # type: ignore[operator]
        ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
        return [to_channels_last(np.asarray(y)) if c else np.asarray(y) for y, c in zip(ys, outs)]

    return run


def keras_model_classes(model: object, prefix: str = "") -> dict[str, str]:
    """A Keras model's class (at ``""``) and each nested model's (``Sequential`` or
    ``Functional``), by its ``/`` path: what a round trip must give back."""
    import keras

    found = {prefix.rstrip("/"): type(model).__name__}
    for layer in model.layers:  # type: ignore[attr-defined]
        if isinstance(layer, keras.Model):
            found.update(keras_model_classes(layer, f"{prefix}{layer.name}/"))
    return found
