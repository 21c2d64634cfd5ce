"""Framework adapters. Each imports its framework lazily, inside its functions.

No adapter imports another; they meet in the spec, the archive and ``weightio.layouts``.
"""
