"""Imports point down the layers and form no cycle (ARCHITECTURE.md, "Layers").

Every module's imports are read with ``ast`` (lazy imports inside functions included: a deferred
import is still a dependency) and checked against the allowed order, top to bottom:

    cli -> runtime, bench -> console, teleop, envs, transport -> agents, data, rewards
        -> sim, hardware -> controllers -> the contracts (interfaces, config, endpoints,
           actions, teleop_command, extras)

(``bench`` sits with ``runtime``: ``bench learning`` runs a training session.)

A module may import its own layer or any layer below it, never above. Packages in one layer may
import each other but not in a circle, and no two modules form a circle either. On top of the
order: envs never import agents (the gripper convention lives in ``robot_rl.actions``), and
controllers import only the contracts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folders installed under the robot_rl namespace (pyproject package-dir) and robot_rl itself.
FOLDERS = {"robot_rl": "robot_rl", "controllers": "robot_rl.controllers",
           "rewards": "robot_rl.rewards", "sim": "robot_rl.sim",
           "hardware": "robot_rl.hardware"}  # fmt: skip

LAYERS: tuple[tuple[str, ...], ...] = (  # bottom first
    ("contracts",),
    ("controllers",),
    ("sim", "hardware"),
    ("agents", "data", "rewards"),
    ("console", "teleop", "envs", "transport"),
    ("runtime", "bench"),  # a benchmark composes the parts it measures, as the runtime does
    ("cli",),
)
RANK = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}
# Single modules directly under robot_rl/ and the group each belongs to.
TOP_MODULES = {"robot_rl": "contracts", "robot_rl.interfaces": "contracts",
               "robot_rl.config": "contracts", "robot_rl.endpoints": "contracts",
               "robot_rl.actions": "contracts", "robot_rl.extras": "contracts",
               "robot_rl.teleop_command": "contracts",
               "robot_rl.demo": "bench",
               "robot_rl.__main__": "cli"}  # fmt: skip
# Imports the order allows but the design forbids: (importer group, imported group).
FORBIDDEN = {("envs", "agents")}
# Pairs (importer module, imported module) still to be straightened, each with its owner's fix.
# This list only shrinks: never add a pair to make a new import pass.
ALLOWED_FOR_NOW: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def group_of(module: str) -> str:
    if module in TOP_MODULES:
        return TOP_MODULES[module]
    group = module.split(".")[1]
    if group not in RANK:
        raise AssertionError(f"{module}: package {group!r} has no layer; add it to LAYERS")
    return group


def _imports(module: str, path: Path) -> set[str]:
    """The project modules ``module`` imports (``from a import b`` counts a.b when it is one)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _allowed(importer: str, imported: str) -> bool:
    return (importer, imported) in ALLOWED_FOR_NOW


def test_every_module_is_read_and_has_a_layer() -> None:
    assert len(MODULES) > 100
    for module in MODULES:
        group_of(module)
    assert "robot_rl.rewards.detector" in MODULES and "robot_rl.cli.errors" in MODULES


def test_no_import_points_up_a_layer() -> None:
    upward = sorted(
        f"{importer} ({group_of(importer)}) imports {imported} ({group_of(imported)})"
        for importer, imports in GRAPH.items()
        for imported in imports
        if RANK[group_of(imported)] > RANK[group_of(importer)] and not _allowed(importer, imported)
    )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_the_design_forbids() -> None:
    forbidden = sorted(
        f"{importer} imports {imported}"
        for importer, imports in GRAPH.items()
        for imported in imports
        if (group_of(importer), group_of(imported)) in FORBIDDEN
        and not _allowed(importer, imported)
    )
    assert not forbidden, "\n".join(forbidden)


def test_controllers_import_only_the_contracts() -> None:
    wrong = sorted(
        f"{importer} imports {imported}"
        for importer, imports in GRAPH.items()
        if group_of(importer) == "controllers"
        for imported in imports
        if group_of(imported) not in ("controllers", "contracts")
    )
    assert not wrong, "\n".join(wrong)


def test_no_module_import_cycle() -> None:
    graph = {m: {i for i in imports if not _allowed(m, i)} for m, imports in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_package_import_cycle() -> None:
    packages: dict[str, set[str]] = {}
    for importer, imports in GRAPH.items():
        packages.setdefault(group_of(importer), set()).update(
            group_of(i) for i in imports
            if group_of(i) != group_of(importer) and not _allowed(importer, i)
        )  # fmt: skip
    cycles = _cycles(packages)
    assert not cycles, "package cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_allowlist_only_holds_violations_that_still_exist() -> None:
    """A pair stays only while it is still an upward or forbidden import, or closes a cycle."""
    in_cycle = {frozenset(c) for c in _cycles(GRAPH)}

    def violates(importer: str, imported: str) -> bool:
        low, high = group_of(importer), group_of(imported)
        return (
            RANK[high] > RANK[low]
            or (low, high) in FORBIDDEN
            or any(importer in c and imported in c for c in in_cycle)
        )

    stale = sorted(pair for pair in ALLOWED_FOR_NOW
                   if pair[1] not in GRAPH.get(pair[0], ()) or not violates(*pair))  # fmt: skip
    assert not stale, f"fixed; remove from ALLOWED_FOR_NOW: {stale}"


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    """The checker itself: a made-up graph with a circle is caught; a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert RANK[group_of("robot_rl.rewards.dataset")] < RANK[group_of("robot_rl.console.hub")]
    with pytest.raises(AssertionError, match="no layer"):
        group_of("robot_rl.nowhere.module")
