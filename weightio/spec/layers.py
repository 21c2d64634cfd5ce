"""The ``Layer`` union: every layer kind, from the family modules listed here.

Each family module (``core``, ``conv``, ``norm``, ``recurrent``, ``merge``, ``attention``,
``ops``) ends
in a ``LAYERS`` tuple; adding a kind to a family's tuple adds it to the spec, the JSON Schema and
every registry's support matrix.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from weightio.spec import attention, conv, core, merge, norm, ops, recurrent
from weightio.spec.base import LayerBase

#: The layer families, in the order their kinds appear in the union.
FAMILIES = (core, conv, norm, recurrent, merge, attention, ops)

ALL_LAYERS: tuple[type[LayerBase], ...] = tuple(cls for family in FAMILIES for cls in family.LAYERS)

Layer = Annotated[Union[ALL_LAYERS], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007 - Union of a runtime tuple


def _kinds_of(cls: type[LayerBase]) -> tuple[str, ...]:
    """The ``kind`` tags a model accepts (a merge model takes several)."""
    annotation = cls.model_fields["kind"].annotation
    return tuple(getattr(annotation, "__args__", ())) or (cls.model_fields["kind"].default,)


#: Every layer model by its ``kind`` tag.
LAYER_KINDS: dict[str, type[LayerBase]] = {
    kind: cls for cls in ALL_LAYERS for kind in _kinds_of(cls)
}


def kinds_with(*traits: str) -> frozenset[str]:
    """The kinds whose layout trait is one of ``traits`` (see ``weightio.spec.base.LayoutTrait``)."""
    return frozenset(kind for kind, cls in LAYER_KINDS.items() if cls.layout in traits)


#: Kinds that read several inputs.
MULTI_INPUT_KINDS = frozenset(kind for kind, cls in LAYER_KINDS.items() if cls.multi_input)
