"""atheris (libFuzzer) harness for long, coverage-guided runs of weightio's file readers.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_readers.py --reader h5 -atheris_runs=100000 [corpus_dir ...]

libFuzzer's own flags (``-max_total_time=``, ``-jobs=``…) pass through. Each input is mapped
onto the seed corpus: the first bytes of the fuzzer's data drive the shared mutation engine
(``fuzz.mutate``) through a ``random.Random`` seeded from them, so coverage feedback steers the
structure-aware mutations too; with ``--raw`` the fuzzer's bytes are the file itself (best with a
corpus directory written by ``python fuzz/seeds.py DIR``).

The reader runs in this process (libFuzzer needs it for coverage), so a crash in HDF5's C code
stops the run and libFuzzer saves the input as ``crash-*``; any exception that is not a
``WeightioError`` is re-raised, which atheris reports as a finding too. Hangs are caught by
libFuzzer's ``-timeout=`` (seconds per input; the default here is 10). Replay a finding with
``python fuzz/run.py`` or by calling ``fuzz.contract.call_reader`` on the saved file.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install -e '.[fuzz]' (or use fuzz/run.py, the "
                 "pure-Python driver with the same mutation engine)")
    args = list(sys.argv)
    reader = "archive"
    raw = "--raw" in args
    if raw:
        args.remove("--raw")
    if "--reader" in args:
        i = args.index("--reader")
        reader = args[i + 1]
        del args[i:i + 2]
    defaults = {"-timeout=": "10", "-rss_limit_mb=": "8192"}
    for flag, value in defaults.items():
        if not any(a.startswith(flag) for a in args):
            args.append(flag + value)

    with atheris.instrument_imports():
        import weightio  # noqa: F401
        from fuzz import mutate, seeds
        from fuzz.contract import call_reader
        from weightio.errors import WeightioError

    corpus = seeds.build([reader])[reader]
    if not corpus:
        sys.exit(f"no seeds for {reader} (is torch installed?)")
    pool = [s.data for s in corpus]
    folder = tempfile.mkdtemp(prefix=f"weightio-atheris-{reader}-")

    def one_input(data: bytes) -> None:
        if raw:
            base = corpus[len(data) % len(corpus)]
            content = data
        else:
            rng = random.Random(data[:16])
            base = rng.choice(corpus)
            content = mutate.mutate(rng, reader, base.data, pool)
            if len(data) > 16:  # let the fuzzer's own bytes land in the input too
                at = int.from_bytes(data[16:20].ljust(4, b"\0"), "little") % (len(content) + 1)
                content = content[:at] + data[20:] + content[at + len(data[20:]):]
        path = os.path.join(folder, base.name)
        with open(path, "wb") as handle:
            handle.write(content)
        try:
            call_reader(reader, path, base.options)
        except WeightioError:
            pass

    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
