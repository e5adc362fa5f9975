"""The house checked, not claimed: the import graph of the library, parsed from its source.

Every import counts, in-function ones too (they hold circles shut); imports under
``if TYPE_CHECKING:`` do not (they never run). The rules are the ones docs/architecture.md
states: packages in the order probes → steering → analysis → steerscope, no circle anywhere,
the contract module `steering/steerable.py` on the ground floor, and inside steering and
analysis each stage imports only the stages before it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("probes", "steering", "analysis", "steerscope")  # each imports only those before it

# Inside a package: stages in data-flow order (sub-packages or modules, by their first name under the
# package). A module imports only its own stage or earlier ones; every module belongs to a stage.
STAGES = {
    "steering": [
        {"steerable"},  # the contract: imports no other steering module
        {"directions", "positions"},
        {"modes", "recorded_model"},
        {"intervene"},
        {"plans", "adapters", "calibrate"},
        {"formats", "serve"},
    ],
    "analysis": [{"readouts"}, {"measures"}, {"studies"}, {"reports"}],
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.AST):
    """Import nodes that can run (everything except the bodies of ``if TYPE_CHECKING:``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str) -> set[str]:
    """The project modules ``name`` imports (a package's ``__init__`` when a name is not a module of its own)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for target in targets:
            while target and target not in MODULES:  # `import probes.sublayers as sl` or a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imported_modules(name) for name in MODULES}


def circles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(GRAPH[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_source():
    assert "steering.plans" in MODULES and "probes.sublayers" in GRAPH["steering.intervene"]
    assert GRAPH["steering"] >= {"steering.plans", "steering.steerable"}


def test_no_circles():
    assert circles() == [], "import circles (break them by moving the shared part down a floor)"


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_packages_below(package):
    allowed = set(PACKAGES[: PACKAGES.index(package) + 1])
    upward = sorted(
        f"{name} imports {other}"
        for name, others in GRAPH.items()
        if name.split(".")[0] == package
        for other in others
        if other.split(".")[0] not in allowed
    )
    assert upward == []


def stage_of(package: str, name: str) -> int:
    if name == package:
        return len(STAGES[package])  # the package face sits on top of its stages
    first = name.split(".")[1]
    for floor, members in enumerate(STAGES[package]):
        if first in members:
            return floor
    raise AssertionError(
        f"{name} belongs to no stage of {package}: add {first!r} to STAGES in tests/test_layering.py and docs/architecture.md"
    )


@pytest.mark.parametrize("package", sorted(STAGES))
def test_stages_import_only_earlier_stages(package):
    upward = [
        f"{name} (stage {stage_of(package, name)}) imports {other} (stage {stage_of(package, other)})"
        for name, others in sorted(GRAPH.items())
        if name.split(".")[0] == package
        for other in sorted(others)
        if other.split(".")[0] == package and stage_of(package, other) > stage_of(package, name)
    ]
    assert upward == []


def test_the_contract_module_imports_no_other_steering_module():
    assert {m for m in GRAPH["steering.steerable"] if m.split(".")[0] == "steering"} == set()
