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
the Keras writer (``to_keras(nested=...)``). A function ending a group (read only outside it:
the residual ``add`` closing a block) joins it when all it reads is the group's or read inside
the group too. Tensor keys stay the state dict's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from weightio.errors import MalformedFileError
from weightio.format.archive import Archive
from weightio.frameworks.common import KERAS_MODEL_CLASSES
from weightio.frameworks.torch.common import qualified_name

#: The class ``to_torch`` gives a nested model's module (``write/nesting.py``).
GROUP_CLASS = "weightio.frameworks.torch.write.nesting.NestedModel"
#: The ``.pt2`` member (``torch.export.save(extra_files=...)``) holding the groups.
EXTRA_FILE = "weightio.groups.json"
#: At most this many groups, each name at most this long, in a ``.pt2``'s member.
MAX_GROUPS, MAX_NAME = 10_000, 512


class Nesting(NamedTuple):
    """What a torch module (or the ``.pt2`` weightio wrote) keeps of a Keras model's nesting.

    ``groups``: torch path -> spec name of each ``NestedModel``; ``classes``: torch path
    (``""``: the model itself) -> ``"Sequential"`` where the Keras model there was one (the
    reader's ``model_classes``), so ``to_keras`` can build a ``Sequential`` again.
    """

    groups: dict[str, str]
    classes: dict[str, str]


#: No nesting: a user's own module, a bare state dict.
NO_NESTING = Nesting({}, {})


def module_nesting(module: Any) -> Nesting:
    """The ``NestedModel`` groups of a live ``module``, and the Keras classes recorded on them
    (``weightio_class``; on the module itself for the model's own class).
    """
    groups, classes = {}, {}
    for path, sub in module.named_modules():
        if not (path and qualified_name(sub) == GROUP_CLASS
                and isinstance(getattr(sub, "weightio_name", None), str)):
            continue
        groups[path] = str(sub.weightio_name)
        if getattr(sub, "weightio_class", None) in KERAS_MODEL_CLASSES:
            classes[path] = sub.weightio_class
    if groups and getattr(module, "weightio_class", None) in KERAS_MODEL_CLASSES:
        classes[""] = module.weightio_class
    return Nesting(groups, classes)


def nesting_json(nesting: Nesting) -> str:
    """The ``.pt2`` member's text for ``nesting``."""
    return json.dumps({"groups": dict(sorted(nesting.groups.items())),
                       "classes": dict(sorted(nesting.classes.items()))}, sort_keys=True)


def _torch_path(path: Any) -> bool:
    return (isinstance(path, str) and bool(path) and len(path) <= MAX_NAME
            and all(part.isidentifier() or (part.isascii() and part.isdigit())
                    for part in path.split(".")))


def parse_nesting(text: str | bytes, *, file: Any = None) -> Nesting:
    """The nesting a ``.pt2`` member holds; anything but small maps of names is refused."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedFileError(f"{EXTRA_FILE} is not JSON ({exc})", file=file) from None
    if (not isinstance(data, dict) or set(data) != {"groups", "classes"}
            or not isinstance(data["groups"], dict) or not isinstance(data["classes"], dict)
            or len(data["groups"]) > MAX_GROUPS or len(data["classes"]) > MAX_GROUPS + 1):
        raise MalformedFileError(
            f"{EXTRA_FILE} must hold 'groups' (at most {MAX_GROUPS} torch paths to nested-model "
            "names) and 'classes' (torch paths to Keras model classes)", file=file)
    groups, classes = data["groups"], data["classes"]
    for path, name in groups.items():
        if not (_torch_path(path) and isinstance(name, str) and name and len(name) <= MAX_NAME
                and "/" not in name and "\\" not in name and name == name.strip()):
            raise MalformedFileError(
                f"{EXTRA_FILE}: {path!r} -> {name!r} is not a torch path and a nested-model name "
                "(no '/', no surrounding spaces)", file=file)
    for path, kind in classes.items():
        if not ((path == "" or path in groups) and kind in KERAS_MODEL_CLASSES):
            raise MalformedFileError(
                f"{EXTRA_FILE}: classes {path!r} -> {kind!r} is not a group (or '') and one of "
                f"{', '.join(KERAS_MODEL_CLASSES)}", file=file)
    return Nesting(groups, classes)


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


def _a_module(layer: Any) -> bool:
    """Whether the reader read ``layer`` from a module (``torch.nn.AvgPool1d``) rather than a
    function (``torch.cat``, ``method:permute``, ``operator.add``): a top-level module is named
    by its attribute, without a dot, yet it is the user's layer there, not a function to place.
    """
    source = layer.source_class or ""
    last = source.replace(":", ".").rsplit(".", 1)[-1]
    return last[:1].isupper()


def _ends(name: str, sources: Mapping[str, list[str]], owner: Mapping[str, str | None]
          ) -> str | None:
    """The group the unnamed layer ``name`` ends, if any: it reads layers of one group, and
    whatever else it reads (a model input, a top-level layer) is read inside that group too,
    as the residual ``add`` closing a block reads the block's input. Such a function was the
    nested model's step (Keras names it; a torch function has no path), so it joins the group.
    """
    reads = sources[name]
    held = {owner.get(s) for s in reads if owner.get(s) is not None}
    if len(held) != 1:
        return None
    group = held.pop()
    inside = {s for layer, g in owner.items() if g is not None and (g == group or g.startswith(
        group + ".")) for s in sources.get(layer, [])}
    return group if all(owner.get(s) is not None or s in inside for s in reads) else None


def regrouped(archive: Archive, nesting: Nesting) -> Archive:
    """``archive`` with the layers under ``nesting.groups`` (torch path -> spec name) named
    ``<group>/<layer>``, and the recorded Keras classes in ``spec.extra["keras"]`` (by ``/``
    path, as the Keras reader records them); unchanged without groups.
    """
    groups = nesting.groups
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
            if owner[layer.name] is not None or "." in layer.name or _a_module(layer):
                continue  # grouped, under a module path, or a top-level module of its own
            group = _joined(sources[layer.name], consumers[layer.name], owner, groups)
            if group is None:
                group = _ends(layer.name, sources, owner)
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
    update: dict[str, Any] = {"layers": new_layers, "outputs": outputs}
    if nesting.classes:
        classes = {(_spec_prefix(path, groups).rstrip("/") if path else ""): kind
                   for path, kind in nesting.classes.items()}
        update["extra"] = {**spec.extra, "keras": {**spec.extra.get("keras", {}),
                                                   "model_classes": classes}}
    return Archive(spec.model_copy(update=update), archive.stored)
