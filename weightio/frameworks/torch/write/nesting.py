"""Nested-model groups in the modules ``to_torch`` builds: ``outer/inner`` layers under a
``NestedModel`` submodule ``outer``.

A spec layer ``outer/inner`` (a Keras model used as a layer, read as its layers) is the torch
submodule path ``outer.inner``. fx installs the parents of such paths as plain ``nn.Module``s,
which a reader cannot tell from any user's container. So each group becomes a
:class:`NestedModel`: the same children, plus the group's name as the spec had it (a Keras
model called ``mobilenetv2_0.35_32`` is the attribute ``mobilenetv2_0_35_32``). Reading the
module back (``weightio.frameworks.torch.nesting``) turns such paths into ``/`` names again,
so Keras → PyTorch → Keras rebuilds the user's nested models. ``NestedModel`` has no
``forward``: the graph calls its children directly, so it never changes what is computed,
and its state dict keys are the plain ``outer.inner.weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightio.frameworks.torch.write.base import ModuleClasses

MODULES = ModuleClasses(__name__)


def __getattr__(name: str) -> Any:
    return MODULES.attribute(name)


@MODULES.define("NestedModel")
def _nested_class(nn: Any) -> type:
    class NestedModel(nn.Module):
        """A nested model's layers (a ``/`` group of the spec), named as the spec names it."""

        def __init__(self, weightio_name: str) -> None:
            super().__init__()
            self.weightio_name = weightio_name
            #: ``"Sequential"`` or ``"Functional"`` when the Keras reader recorded it.
            self.weightio_class: str | None = None

        def extra_repr(self) -> str:
            return f"weightio_name={self.weightio_name!r}"

    return NestedModel


def mark_groups(module: Any, groups: Mapping[str, str],
                classes: Mapping[str, str] | None = None) -> Any:
    """Replace the plain parent module at each path of ``groups`` (torch path -> the group's
    spec name) with a ``NestedModel`` holding the same children; returns ``module``.

    ``classes`` (torch path, ``""`` for ``module`` itself -> ``"Sequential"``/``"Functional"``)
    become ``weightio_class`` attributes, what the Keras model there was, so reading the module
    back lets ``to_keras`` build a ``Sequential`` again. Parents go first, so a twice nested
    group is replaced inside its replaced parent.
    """
    cls = MODULES.get("NestedModel")
    classes = classes or {}
    for path in sorted(groups, key=lambda p: p.count(".")):
        parent_path, _, attr = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        plain = getattr(parent, attr)
        group = cls(groups[path])
        if path in classes:
            group.weightio_class = classes[path]
        for child_name, child in plain.named_children():
            group.add_module(child_name, child)
        setattr(parent, attr, group)
    if groups and "" in classes:
        module.weightio_class = classes[""]
    return module
