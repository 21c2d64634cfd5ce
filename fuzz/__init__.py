"""Mutation fuzzing of weightio's file readers (see ``fuzz/README.md``).

``seeds`` builds a small valid corpus in code, ``mutate`` turns a seed into a hostile variant,
``contract`` checks one input against the reader contract in a separate worker process, and
``run``/``fuzz_readers`` drive long runs (pure Python, or atheris when installed).
"""
