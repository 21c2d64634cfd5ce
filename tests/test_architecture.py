"""The tree is the architecture: imports point one way, with no cycles and no private borrowing.

Every ``import`` in every weightio module counts, at module level or inside a function (a lazy
import is still a dependency), except under ``if TYPE_CHECKING:``. docs/architecture.md states the
rules this test enforces:

- no import cycle among weightio modules;
- no module imports a ``_private`` name from another module, or reads one off an imported module;
- a module imports only from its own package or from packages below it in the layer order;
- the framework packages (keras, torch, sklearn) never import one another;
- imports stand at the top of a file, never below its code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "weightio"

#: Layer of each top-level part of weightio; a module may import from its own layer or below.
#: Siblings on one layer may not import each other unless listed in ``SIDEWAYS``.
LAYERS: dict[str, int] = {
    "cli": 10,
    "__main__": 10,
    "__init__": 10,
    "batch": 9,
    "verbs": 8,
    "report": 7,
    "analysis": 6,
    "frameworks": 6,
    "transforms": 6,
    "runtime": 5,
    "layouts": 4,
    "format": 3,
    "spec": 2,
    "errors": 0,
    "registry": 1,
    "version": 1,
    "optional": 1,
    "progress": 1,
    "terminal": 1,
    "options": 1,
    "cli_values": 1,
}
FRAMEWORKS = ("keras", "torch", "sklearn")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping ``if TYPE_CHECKING:`` bodies."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                pending.extend(child.orelse)
                continue
            pending.append(child)


def imports_of(name: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every weightio import in ``name``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "weightio":
                    found.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "weightio":
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    found.append((full, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        edges[name] = {target for target, _, _ in imports_of(name) if target in MODULES and target != name}
    return edges


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules() -> None:
    problems = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_aliases: dict[str, str] = {}
        for target, imported, line in imports_of(name):
            if imported is not None and imported.startswith("_") and not imported.startswith("__"):
                problems.append(f"{name}:{line} imports {target}.{imported}")
        for node in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        module_aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in MODULES:
                        module_aliases[alias.asname or alias.name] = full
        for node in _walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{name}:{node.lineno} reads {module_aliases[node.value.id]}.{node.attr}")
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


def _part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _framework(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "frameworks" and parts[2] in FRAMEWORKS:
        return parts[2]
    return None


def test_every_part_has_a_layer() -> None:
    assert {_part(name) for name in MODULES} <= set(LAYERS)


def test_imports_point_down_the_layers() -> None:
    problems = []
    for name in MODULES:
        own = _part(name)
        for target, _, line in imports_of(name):
            other = _part(target)
            if other == own:
                mine, theirs = _framework(name), _framework(target)
                if mine and theirs and mine != theirs:
                    problems.append(f"{name}:{line} imports {target} (frameworks never import each other)")
                continue
            if LAYERS[other] >= LAYERS[own] and own not in ("__init__", "__main__"):
                problems.append(f"{name}:{line} imports {target} ({other} is not below {own})")
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_imports_stand_at_the_top() -> None:
    problems = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        seen_code = False
        for node in tree.body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue  # names for type checkers only: not an import at run time
            is_import = isinstance(node, (ast.Import, ast.ImportFrom))
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if is_import and seen_code:
                problems.append(f"{name}:{node.lineno}")
            elif not is_import and not docstring:
                seen_code = True
    assert not problems, "imports below code:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_what_it_owns(package: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text(encoding="utf-8")))
    assert doc and doc.strip(), f"{package} has no docstring"
