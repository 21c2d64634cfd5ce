"""Pure-Python fuzz driver: ``python fuzz/run.py --reader h5 --count 10000 --seed 1``.

Generates ``--count`` mutated inputs per reader from the seed corpus (``fuzz.seeds``) with the
shared engine (``fuzz.mutate``), checks each against the reader contract in worker processes
(``fuzz.contract``; ``--jobs`` of them), and prints a summary table: inputs, successes, typed
errors by class, and untyped / crash / hang / violation counts. Input ``i`` of a run is a pure
function of ``(--seed, reader, i)``, so any finding is reproduced with ``--only i``. Every input
that breaks the contract is saved under ``--findings`` (default ``fuzz/findings/``, git-ignored)
with a ``.json`` note; the exit status is 1 if any did.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz import mutate, seeds  # noqa: E402
from fuzz.contract import DEFAULT_TIMEOUT, Outcome, Worker  # noqa: E402


def make_input(corpus: list[seeds.Seed], pool: list[bytes], reader: str, seed: int,
               index: int) -> tuple[seeds.Seed, bytes]:
    """Input ``index`` of run ``seed``: a seed and its mutation (deterministic)."""
    rng = random.Random(f"{seed}:{reader}:{index}")
    base = rng.choice(corpus)
    return base, mutate.mutate(rng, reader, base.data, pool)


def fuzz_reader(reader: str, corpus: list[seeds.Seed], pool: list[bytes], *, count: int, seed: int,
                jobs: int, timeout: float, findings: Path, only: list[int] | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Run ``count`` inputs for ``reader``; return the tallies."""
    indices = only if only is not None else list(range(count))
    tally: Counter[str] = Counter()
    typed: Counter[str] = Counter()
    unnamed: Counter[str] = Counter()
    bugs: list[dict[str, Any]] = []
    examples: dict[str, str] = {}
    lock = threading.Lock()
    cursor = iter(indices)
    started = time.monotonic()
    done = [0]

    failures: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            _work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failures.append(exc)

    def _work() -> None:
        with tempfile.TemporaryDirectory(prefix=f"weightio-fuzz-{reader}-") as tmp, \
                Worker(timeout=timeout) as worker:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                base, data = make_input(corpus, pool, reader, seed, index)
                path = Path(tmp) / base.name
                path.write_bytes(data)
                outcome = worker.check(reader, path, base.options)
                with lock:
                    _record(outcome, index, base, data)

    def _record(outcome: Outcome, index: int, base: seeds.Seed, data: bytes) -> None:
        tally[outcome.kind] += 1
        if outcome.kind == "typed":
            typed[outcome.error] += 1
            if not outcome.names_file:
                unnamed[outcome.error] += 1
                examples.setdefault(outcome.error, f"input {index}: {outcome.message[:200]}")
        if outcome.is_bug:
            findings.mkdir(parents=True, exist_ok=True)
            stem = f"{reader}-s{seed}-{index}"
            (findings / f"{stem}-{base.name}").write_bytes(data)
            note = {"reader": reader, "seed": seed, "index": index, "base": base.name,
                    "options": base.options, "outcome": outcome.label,
                    "message": outcome.message, "detail": outcome.detail}
            (findings / f"{stem}.json").write_text(json.dumps(note, indent=1))
            bugs.append(note)
            if progress:
                print(f"  BUG {outcome.label} at input {index} ({base.name}): "
                      f"{outcome.message[:160]}", file=sys.stderr)
        done[0] += 1
        if progress and done[0] % 1000 == 0:
            rate = done[0] / (time.monotonic() - started)
            print(f"  {reader}: {done[0]}/{len(indices)} ({rate:.0f}/s)", file=sys.stderr)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return {"reader": reader, "inputs": len(indices), "seconds": time.monotonic() - started,
            "tally": dict(tally), "typed": dict(typed), "unnamed": dict(unnamed), "unnamed_examples": examples, "bugs": bugs}


def table(results: list[dict[str, Any]]) -> str:
    """The summary table (markdown, so it pastes into fuzz/README.md)."""
    lines = ["| reader | inputs | wall s | ok | typed | untyped | crash | hang | violation | "
             "typed errors by class |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        t = r["tally"]
        classes = ", ".join(f"{k} {v}" for k, v in sorted(r["typed"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {r['reader']} | {r['inputs']} | {r['seconds']:.0f} | {t.get('ok', 0)} | "
            f"{t.get('typed', 0)} | {t.get('untyped', 0)} | {t.get('crash', 0)} | "
            f"{t.get('hang', 0)} | {t.get('violation', 0)} | {classes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", action="append", choices=seeds.READERS + ("all",),
                        help="reader to fuzz (repeatable; default all)")
    parser.add_argument("--count", type=int, default=10_000, help="inputs per reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes per reader")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds an input may take before it counts as a hang")
    parser.add_argument("--only", type=int, action="append", help="re-run input N only")
    parser.add_argument("--findings", type=Path, default=Path(__file__).parent / "findings")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    readers = [r for r in (args.reader or ["all"])]
    if "all" in readers:
        readers = list(seeds.READERS)
    corpora = seeds.build(readers)
    pool = [s.data for corpus in corpora.values() for s in corpus]
    results = []
    for reader in readers:
        corpus = corpora[reader]
        if not corpus:
            print(f"{reader}: no seeds (is torch installed?); skipped", file=sys.stderr)
            continue
        results.append(fuzz_reader(reader, corpus, pool, count=args.count, seed=args.seed,
                                   jobs=args.jobs, timeout=args.timeout, findings=args.findings,
                                   only=args.only))
    print(table(results))
    for r in results:
        if r["unnamed"]:
            print(f"{r['reader']}: typed errors not naming the file: {r['unnamed']}")
            for cls, example in r["unnamed_examples"].items():
                print(f"  {cls}: {example}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["bugs"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
