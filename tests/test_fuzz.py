"""Mutation fuzzing in CI: a bounded, reproducible slice of what ``fuzz/run.py`` does at length.

For each reader (weightio archives and plain safetensors, ``.keras``, legacy ``.h5`` and
``.weights.h5``, ``torch.save`` zips, legacy torch pickles) hypothesis drives the shared mutation
engine (``fuzz/mutate.py``) over the generated seed corpus, and every mutated input is checked
against the reader contract in a separate worker process (``fuzz/contract.py``): it reads, or it
raises a ``WeightioError`` subclass; no other exception, no hang, no crash of the C parsers
(h5py/HDF5, zlib), no code run, no module imported, nothing opened outside the input's folder.

``derandomize=True`` makes every CI run try the same inputs; a failure prints the input's
hypothesis example, and the bytes can be regenerated with ``fuzz/run.py --only``-style seeds.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fuzz import mutate, seeds  # noqa: E402
from fuzz.contract import Worker  # noqa: E402

#: Mutated inputs per reader per CI run (the long runs in fuzz/README.md do 10,000+).
EXAMPLES = 40


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[seeds.Seed]]:
    return seeds.build()


@pytest.fixture(scope="module")
def worker() -> Any:
    with Worker(timeout=30) as w:  # generous: CI machines are slow and shared
        yield w


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_seeds_are_small_and_readable(corpus: dict[str, list[seeds.Seed]], worker: Worker,
                                      scratch: Path) -> None:
    """Every seed is a few kB and reads cleanly: mutations start from valid structure."""
    try:
        import torch  # noqa: F401
        expected = set(seeds.READERS)
    except ImportError:
        expected = set(seeds.READERS) - {"pt", "pt_legacy"}
    assert {r for r, s in corpus.items() if s} == expected
    for reader, items in corpus.items():
        for seed in items:
            assert len(seed.data) < 32 * 1024, (seed.name, len(seed.data))
            folder = scratch / f"seed-{reader}"
            folder.mkdir(exist_ok=True)
            path = folder / seed.name
            path.write_bytes(seed.data)
            outcome = worker.check(reader, path, seed.options)
            assert outcome.kind == "ok", (seed.name, outcome)


def test_mutation_is_reproducible(corpus: dict[str, list[seeds.Seed]]) -> None:
    """Input i of a run is a function of (seed, reader, i): findings can be replayed."""
    from fuzz.run import make_input

    pool = [s.data for items in corpus.values() for s in items]
    for reader, items in corpus.items():
        if items:
            first = [make_input(items, pool, reader, 3, i)[1] for i in range(5)]
            again = [make_input(items, pool, reader, 3, i)[1] for i in range(5)]
            assert first == again
            assert any(m != s.data for m in first for s in items)


@pytest.mark.parametrize("reader", seeds.READERS)
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(rng=st.randoms(use_true_random=False))
def test_reader_contract_under_mutation(reader: str, rng: random.Random,
                                        corpus: dict[str, list[seeds.Seed]], worker: Worker,
                                        scratch: Path) -> None:
    items = corpus[reader]
    if not items:
        pytest.skip("no seeds for this reader (torch is not installed)")
    pool = [s.data for group in corpus.values() for s in group]
    base = rng.choice(items)
    data = mutate.mutate(rng, reader, base.data, pool)
    folder = scratch / reader
    folder.mkdir(exist_ok=True)
    path = folder / base.name
    path.write_bytes(data)
    outcome = worker.check(reader, path, base.options)
    assert not outcome.is_bug, (
        f"{reader} broke the reader contract on a mutation of {base.name} "
        f"({len(data)} bytes): {outcome.label}: {outcome.message}\n{outcome.detail}"
    )



def test_harness_catches_contract_breaks(tmp_path: Path) -> None:
    """Control: a reader that raises KeyError, aborts, hangs, imports a module or runs a command is
    reported as such, and the worker recovers after each (``_selftest_*`` readers exist only for
    this), so a clean fuzz run means clean readers, not a blind harness."""
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    with Worker(timeout=1) as w:
        for kind, expected in [("untyped", "untyped"), ("crash", "crash"), ("hang", "hang"),
                               ("import", "violation"), ("system", "violation")]:
            outcome = w.check(f"_selftest_{kind}", path)
            assert outcome.kind == expected, (kind, outcome)
            assert w.check("_selftest_ok", path).kind == "ok"
