"""How the packages import each other, read from the source with `ast` (nothing is imported):
no module imports itself through others, and the layers point one way: config <- agents <-
workers. Every import counts, also one inside a function or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT

PACKAGES = ("config", "agents", "workers")
# what each package may import of the others
MAY_IMPORT = {"config": set(), "agents": {"config"}, "workers": {"config", "agents"}}
# the one cycle known today; another piece of work removes it
KNOWN_CYCLE = frozenset({"agents.models", "agents.offline"})

Graph = dict[str, set[str]]


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every module of `packages` under `root`."""
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """Module -> the modules of `packages` it imports (a name imported from a package is the
    submodule when there is one, else the package)."""
    mods = modules(root, packages)

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: Graph = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for target in targets:
                resolved = known(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def cycles(graph: Graph) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(PROJECT_ROOT, PACKAGES)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "workers"
    (pkg / "room").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "room" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from workers.room import b\n")
    (pkg / "room" / "b.py").write_text("from . import c\n")
    (pkg / "room" / "c.py").write_text("def f():\n    from workers.a import x\n")
    (pkg / "d.py").write_text("import workers.a\n")
    graph = import_graph(tmp_path, ["workers"])
    assert graph["workers.room.b"] == {"workers.room.c"}
    assert cycles(graph) == [frozenset({"workers.a", "workers.room.b", "workers.room.c"})]


def test_no_module_imports_itself_through_others(graph: Graph) -> None:
    found = [c for c in cycles(graph) if c != KNOWN_CYCLE]
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_agents_models_and_offline_do_not_import_each_other(graph: Graph) -> None:
    assert KNOWN_CYCLE not in cycles(graph)


def test_the_layers_point_one_way(graph: Graph) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0]
        and target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    )
    assert wrong == []


def test_nothing_imports_tests_or_bench() -> None:
    """DESIGN: nothing imports tests/ or bench/ (each may import itself): what both need
    lives in the packages (the local OpenAI server is workers.openai_server)."""
    graph = import_graph(PROJECT_ROOT, (*PACKAGES, "tests", "bench"))
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] in ("tests", "bench")
        and target.split(".")[0] != module.split(".")[0]
    )
    assert wrong == []
