"""The package's import graph: no module of mkrec imports a module that imports it back (directly or
round a longer circle), and the restore's deciding half never imports its doing half. Every import
counts, also one inside a function or under TYPE_CHECKING: a lazy import hides a circle from Python,
not from the reader (restore/compare.py once imported its Request back from restore/command.py
that way). Read from the source with ast, so nothing is imported to find out."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mkrec"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, package: str, modules: set[str]) -> Iterator[str]:
    """The full names of what a module imports: `from mkrec.x import y` is mkrec.x.y when that is a
    module (which needs mkrec.x's __init__ only as every submodule does), else mkrec.x."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in modules else base


def import_graph() -> dict[str, set[str]]:
    """mkrec module -> the mkrec modules it imports."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = imported(ast.parse(path.read_text(), str(path)), package, set(paths))
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports, as the modules round it; [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_import_cycle_in_mkrec() -> None:
    graph = import_graph()
    assert "mkrec.restore.decide.plan" in graph["mkrec.restore.rebuild"]  # the graph is read at all
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_a_lazy_import_counts() -> None:
    tree = ast.parse("def f():\n    from mkrec.restore.command import Request\n")
    assert list(imported(tree, "mkrec.restore", set())) == ["mkrec.restore.command"]


def test_deciding_never_imports_doing() -> None:
    wrong = sorted(
        f"{m} imports {dep}"
        for m, deps in import_graph().items()
        if m.startswith("mkrec.restore.decide")
        for dep in deps
        if dep.startswith("mkrec.restore.apply")
    )
    assert not wrong, wrong
