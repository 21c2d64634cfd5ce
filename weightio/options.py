"""Checks of the option values verbs take (tolerances, seeds, sample counts).

Shared so every verb refuses a bad value the same way, with ``InvalidInputError`` naming the
option, before any file is read or any model is built: a bad ``--seed`` must not cost a
conversion first, nor end in numpy's traceback.
"""

from __future__ import annotations

import math
import numbers

from weightio.errors import InvalidInputError

#: numpy's seeds are non-negative and fit in 32 bits per word; one word is all a probe needs.
MAX_SEED = 2**32 - 1


def check_tolerance(name: str, value: float) -> float:
    """Refuse a tolerance that is negative, not finite or not a number, naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a finite number >= 0. Received: {name}={value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0. Received: {name}={value}")
    return value


def check_count(name: str, value: int, *, minimum: int = 1) -> int:
    """Refuse a count (``samples``) that is not an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidInputError(
            f"{name} must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def check_seed(value: int, name: str = "seed") -> int:
    """Refuse a seed numpy cannot take (negative, above 2**32 - 1, not an integer)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= value <= MAX_SEED
    ):
        raise InvalidInputError(
            f"{name} must be an integer from 0 to {MAX_SEED}. Received: {name}={value!r}"
        )
    return int(value)
