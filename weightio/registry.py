"""Registries of per-kind functions, keyed by (framework, direction) and then by kind.

One small function per layer kind and direction, found here by key. A miss is an
``UnsupportedLayerError`` naming the layer and its kind; registering a key twice is a bug and
fails at import. The support matrix in docs/layers.md is generated from these registries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from weightio.errors import UnsupportedLayerError

F = TypeVar("F", bound=Callable[..., Any])

#: Every registry, by (framework, direction), for the support matrix.
ALL_REGISTRIES: dict[tuple[str, str], Registry[Any]] = {}


class Registry(Generic[F]):
    """Functions keyed by a layer kind (writers, runtime) or a source class name (readers).

    Reader entries declare which spec kinds they ``produce``, so the support matrix can say
    which kinds a framework reads.
    """

    def __init__(self, framework: str, direction: str) -> None:
        self.framework = framework
        self.direction = direction
        self._entries: dict[str, F] = {}
        self._produces: dict[str, tuple[str, ...]] = {}
        key = (framework, direction)
        if key in ALL_REGISTRIES:
            raise RuntimeError(f"registry {key} is defined twice")
        ALL_REGISTRIES[key] = self

    def register(self, *keys: str, produces: tuple[str, ...] = ()) -> Callable[[F], F]:
        """Register the decorated function under every key in ``keys``."""

        def decorate(fn: F) -> F:
            for key in keys:
                if key in self._entries:
                    raise RuntimeError(
                        f"{self.framework} {self.direction}: {key!r} is registered twice"
                    )
                self._entries[key] = fn
                self._produces[key] = produces or (key,)
            return fn

        return decorate

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: str) -> F | None:
        """Return the function for ``key``, or None."""
        return self._entries.get(key)

    def lookup(self, key: str, *, layer: str | None = None, hint: str = "") -> F:
        """Return the function for ``key`` or raise ``UnsupportedLayerError`` naming the layer."""
        try:
            return self._entries[key]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnsupportedLayerError(
                f"{self.framework} {self.direction} has no mapping for {key!r}"
                f"{hint}. Supported: {known}",
                layer=layer,
            ) from None

    def keys(self) -> list[str]:
        """Return every registered key."""
        return list(self._entries)

    def produces(self, key: str) -> tuple[str, ...]:
        """The spec kinds the entry under ``key`` produces (for writers: the key itself)."""
        return self._produces.get(key, ())

    def kinds(self) -> set[str]:
        """Return the spec kinds this registry handles (for readers: the kinds produced)."""
        kinds: set[str] = set()
        for produced in self._produces.values():
            kinds.update(produced)
        return kinds
