"""A rich progress bar for passes over many bytes of tensors, and nothing for small ones.

Reading statistics or a diff of a multi-GB checkpoint takes seconds to minutes; a bar on stderr
says the tool is working. Below ``THRESHOLD_BYTES`` the pass is near-instant and a bar would only
flicker, so none is drawn. The bar writes to stderr, so ``--json`` on stdout stays clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

#: Passes touching more than this many bytes of tensor data get a progress bar.
THRESHOLD_BYTES = 256 * 1024 * 1024


class Advance(Protocol):
    """Called with the number of bytes just processed."""

    def __call__(self, nbytes: int) -> None: ...  # noqa: D102


def _ignore(nbytes: int) -> None:
    return None


def _bar_visible() -> bool:
    """Whether rich would draw the bar: stderr is a terminal (or ``FORCE_COLOR`` /
    ``TTY_COMPATIBLE=1`` says to act as one), or this is a Jupyter kernel (rich draws a
    widget there). Otherwise rich draws nothing, and importing it (~70 ms) and running its
    refresh thread would only cost a piped or scripted ``convert`` time.
    """
    import os
    import sys

    try:
        tty = sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    return (tty or bool(os.environ.get("FORCE_COLOR")) or os.environ.get("TTY_COMPATIBLE") == "1"
            or "ipykernel" in sys.modules)


@contextmanager
def byte_progress(description: str, total_bytes: int, *, enabled: bool) -> Iterator[Advance]:
    """Yield an ``advance(nbytes)`` callable; draw a bar only when enabled and the pass is big."""
    if not enabled or total_bytes <= THRESHOLD_BYTES or not _bar_visible():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total_bytes)
        yield lambda nbytes: bar.advance(task, nbytes)


#: The bar a deep writer reports into without every layer between passing it down: set by
#: ``reporting`` around a pass (``convert``'s write), read by ``report``.
_CURRENT: ContextVar[Advance | None] = ContextVar("weightio_progress", default=None)


@contextmanager
def reporting(advance: Advance) -> Iterator[None]:
    """Within the block, ``report(nbytes)`` advances ``advance``."""
    token = _CURRENT.set(advance)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def report(nbytes: int) -> None:
    """Advance the bar of the enclosing ``reporting`` block, if there is one."""
    advance = _CURRENT.get()
    if advance is not None:
        advance(nbytes)
