"""Walking object graphs read from files: each object once, within bounds, cycles refused.

A pickle's memo and HDF5's hard links let a file share one object under many parents: a list
reused at every one of 40 levels is 40 objects but 2**40 paths, and a group linked inside itself
is a cycle. A reader that walks such a file as a tree hangs, runs out of memory or overflows the
stack. ``GraphWalk`` is the one walker both the pickle reader (``frameworks/torch/files``) and the
HDF5 reader (``frameworks/keras/files``) use: every object is identified (``id()`` for unpickled
objects, the object-header address for HDF5), computed once and remembered; an object met again
while it is still being walked is a cycle (``MalformedFileError``); depth and the number of
distinct objects are bounded (``ResourceLimitError``), so the walk is linear in the file and
never recurses deeper than ``max_depth``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from weightio.errors import MalformedFileError, ResourceLimitError

T = TypeVar("T")

#: Deepest nesting of containers (pickle) or groups (HDF5) a reader follows.
MAX_DEPTH = 64
#: Most distinct objects (containers, tensors, groups) one file may hold.
MAX_NODES = 4_000_000


class GraphWalk:
    """One walk over one file's object graph.

    Args:
        file: The file, named by every refusal.
        what: What the objects are, for messages (``"pickled object"``, ``"HDF5 group"``).
        shared: ``"reuse"``: an object reached again gives the result computed the first time
            (the output keeps the sharing, so it stays as small as the file); ``"refuse"``: a
            second path to an object is an error (for readers that would copy what they find
            into a flat result, where sharing would multiply it).
    """

    def __init__(
        self,
        *,
        file: object,
        what: str,
        shared: str = "reuse",
        max_depth: int = MAX_DEPTH,
        max_nodes: int = MAX_NODES,
    ) -> None:
        if shared not in ("reuse", "refuse"):
            raise ValueError(shared)
        self.file, self.what, self.shared = file, what, shared
        self.max_depth, self.max_nodes = max_depth, max_nodes
        self._done: dict[Hashable, Any] = {}
        self._where: dict[Hashable, str] = {}
        self._active: set[Hashable] = set()
        self.depth = 0

    @property
    def nodes(self) -> int:
        """How many distinct objects the walk has entered so far."""
        return len(self._where)

    def visit(self, key: Hashable, where: str, compute: Callable[[], T]) -> T:
        """``compute()`` for the object identified by ``key`` (found at ``where``), once.

        ``compute`` walks the object's children through this same ``visit``.
        """
        where = _short(where)
        if key in self._active:
            raise MalformedFileError(
                f"the {self.what} at {where} contains itself (a cycle back to "
                f"{self._where[key]}); a model file is a tree of data, so the file is corrupt "
                "or hostile",
                file=self.file,
            )
        if key in self._done:
            if self.shared == "refuse":
                raise MalformedFileError(
                    f"the {self.what} at {where} is the same object as {self._where[key]} (one "
                    "object linked from two places); weightio reads each object once and the "
                    "writer of this format never shares one, so the file is corrupt or hostile",
                    file=self.file,
                )
            return self._done[key]
        if self.depth >= self.max_depth:
            raise ResourceLimitError(
                f"the {self.what} at {where} nests deeper than {self.max_depth} levels; the file "
                "is corrupt or hostile",
                file=self.file,
            )
        if len(self._where) >= self.max_nodes:
            raise ResourceLimitError(
                f"the file holds more than {self.max_nodes:,} {self.what}s; the file is corrupt "
                "or hostile",
                file=self.file,
            )
        self._where[key] = where
        self._active.add(key)
        self.depth += 1
        try:
            result = compute()
        finally:
            self.depth -= 1
            self._active.discard(key)
        self._done[key] = result
        return result


def _short(where: str, limit: int = 160) -> str:
    """A path for a message: its end, where the repetition shows (``…/a/a/b``)."""
    return where if len(where) <= limit else "…" + where[-limit:]
