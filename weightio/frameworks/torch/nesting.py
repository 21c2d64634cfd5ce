"""Nested Keras models back from torch: the ``NestedModel`` groups of a module ``to_torch``
built (``write/nesting.py``) read as ``outer/inner`` layer names again.

The readers name a layer by its torch path (``outer.inner``), which for a user's own module
is the right name: only weightio's mark says that a submodule was a nested model. The mark
travels as the submodules' class on a live module, and as the JSON member
:data:`EXTRA_FILE` of a ``.pt2`` (``{"<torch path>": "<spec name>"}``; ``torch.export``
programs keep no parent module that a graph never calls). A bare state dict has no
architecture, so nothing to regroup.

:func:`regrouped` renames every layer under a group path (``outer_1.conv`` ->
``outer.1/conv``) and pulls in the unnamed layers between them: a layer with no module path
(an ``add``, or the activation a ``.pt2`` read names ``relu``) joins the deepest group that
holds every layer it reads and one that reads it, so a group is one clean sub-graph again for
the Keras writer (``to_keras(nested=...)``). A function ending a group (read only outside it)
stays at the top level, after the group: the same numbers, one layer moved. Tensor keys stay
the state dict's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from weightio.errors import MalformedFileError
from weightio.format.archive import Archive
from weightio.frameworks.torch.common import qualified_name

#: The class ``to_torch`` gives a nested model's module (``write/nesting.py``).
GROUP_CLASS = "weightio.frameworks.torch.write.nesting.NestedModel"
#: The ``.pt2`` member (``torch.export.save(extra_files=...)``) holding the groups.
EXTRA_FILE = "weightio.groups.json"
#: At most this many groups, each name at most this long, in a ``.pt2``'s member.
MAX_GROUPS, MAX_NAME = 10_000, 512


def module_groups(module: Any) -> dict[str, str]:
    """Torch path -> spec name of every ``NestedModel`` in a live ``module``."""
    return {
        path: str(sub.weightio_name)
        for path, sub in module.named_modules()
        if path and qualified_name(sub) == GROUP_CLASS and isinstance(
            getattr(sub, "weightio_name", None), str)
    }


def groups_json(groups: Mapping[str, str]) -> str:
    """The ``.pt2`` member's text for ``groups``."""
    return json.dumps(dict(sorted(groups.items())), sort_keys=True)


def parse_groups(text: str | bytes, *, file: Any = None) -> dict[str, str]:
    """The groups a ``.pt2`` member holds; anything but a small map of names is refused."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedFileError(f"{EXTRA_FILE} is not JSON ({exc})", file=file) from None
    if not isinstance(data, dict) or len(data) > MAX_GROUPS:
        raise MalformedFileError(
            f"{EXTRA_FILE} must map at most {MAX_GROUPS} torch paths to nested-model names",
            file=file)
    for path, name in data.items():
        if not (isinstance(name, str) and path and name and len(path) <= MAX_NAME
                and len(name) <= MAX_NAME and "/" not in name and "\\" not in name
                and name == name.strip() and all(part.isidentifier() or (part.isascii() and part.isdigit())
                                           for part in path.split("."))):
            raise MalformedFileError(
                f"{EXTRA_FILE}: {path!r} -> {name!r} is not a torch path and a nested-model name "
                "(no '/', no surrounding spaces)", file=file)
    return data


def _group_of(name: str, groups: Mapping[str, str]) -> str | None:
    """The deepest group path ``name`` (a torch path) lies under."""
    best = None
    for path in groups:
        if name.startswith(path + ".") and (best is None or len(path) > len(best)):
            best = path
    return best


def _spec_prefix(path: str, groups: Mapping[str, str]) -> str:
    """``outer_1.inner`` -> ``outer.1/inner/``: each group level by its spec name. The user's
    own containers above a group keep torch's dotted path (``0.head`` + group ``v1`` ->
    ``0.head.v1/``), as every layer of a user's module is named.
    """
    parts = path.split(".")
    prefix, plain = "", []
    for depth in range(1, len(parts) + 1):
        name = groups.get(".".join(parts[:depth]))
        if name is None:
            plain.append(parts[depth - 1])
        else:
            prefix += ".".join([*plain, name]) + "/"
            plain = []
    return prefix


def _common(a: str | None, b: str | None, groups: Mapping[str, str]) -> str | None:
    """The deepest group holding both group paths (``None``: only the model itself)."""
    if a is None or b is None:
        return None
    pa, pb = a.split("."), b.split(".")
    best = None
    for depth in range(1, min(len(pa), len(pb)) + 1):
        if pa[:depth] != pb[:depth]:
            break
        if ".".join(pa[:depth]) in groups:
            best = ".".join(pa[:depth])
    return best


def _joined(sources: list[str], consumers: list[str],
            owner: Mapping[str, str | None], groups: Mapping[str, str]) -> str | None:
    """The group an unnamed layer belongs to: the deepest one holding every layer it reads and
    one layer reading it (model inputs are read anywhere); ``None`` keeps it at the top.
    """
    read = [owner[s] for s in sources if s in owner]
    if not read or any(g is None for g in read):
        return None
    held = read[0]
    for group in read[1:]:
        held = _common(held, group, groups)
    found = [_common(held, owner.get(c), groups) for c in consumers]
    found = [g for g in found if g is not None]
    return max(found, key=lambda g: g.count(".")) if found else None


def regrouped(archive: Archive, groups: Mapping[str, str]) -> Archive:
    """``archive`` with the layers under ``groups`` (torch path -> spec name) named
    ``<group>/<layer>``; unchanged without groups.
    """
    spec = archive.spec
    if not groups or not spec.layers:
        return archive
    layers = spec.layers
    owner: dict[str, str | None] = {layer.name: _group_of(layer.name, groups) for layer in layers}
    sources = {layer.name: spec.layer_inputs(i) for i, layer in enumerate(layers)}
    consumers: dict[str, list[str]] = {layer.name: [] for layer in layers}
    for name, reads in sources.items():
        for source in reads:
            consumers.setdefault(source, []).append(name)
    changed = True
    while changed:  # functions between grouped layers join their group (chains of them too)
        changed = False
        for layer in layers:
            if owner[layer.name] is not None or "." in layer.name:
                continue
            group = _joined(sources[layer.name], consumers[layer.name], owner, groups)
            if group is not None:
                owner[layer.name] = group
                changed = True
    renames: dict[str, str] = {}
    for layer in layers:
        group = owner[layer.name]
        if group is None:
            continue
        leaf = layer.name[len(group) + 1:] if layer.name.startswith(group + ".") else layer.name
        renames[layer.name] = _spec_prefix(group, groups) + leaf
    taken = {layer.name for layer in layers if layer.name not in renames}
    if len(set(renames.values()) | taken) != len(taken) + len(renames):
        return archive  # a clash of names: keep torch's, which are unique
    new_layers = []
    for layer in layers:
        update: dict[str, Any] = {"name": renames.get(layer.name, layer.name)}
        if layer.inputs is not None:
            update["inputs"] = [renames.get(s, s) for s in layer.inputs]
        new_layers.append(layer.model_copy(update=update))
    outputs = [out.model_copy(update={"layer": renames.get(out.layer, out.layer)})
               for out in spec.outputs]
    return Archive(spec.model_copy(update={"layers": new_layers, "outputs": outputs}),
                   archive.stored)
