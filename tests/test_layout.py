"""exbe's modules stay small and their imports form no cycle (issue 21).

Imports are read with ast, wherever they are in a module (a function-level import is a dependency too), except
those under ``if TYPE_CHECKING:``, which exist only for the type checker. The sandbox (``exbe/sandbox``) is a
simulator of the servers and is measured apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

EXBE = Path(__file__).resolve().parent.parent / "exbe"
#: About how long a module may grow before it should split; a longer one says why at its top.
MAX_LINES = 500
REASON = "# Over 500 lines because"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(EXBE.rglob("*.py")):
        relative = path.relative_to(EXBE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The exbe modules ``name`` imports at run time."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import steps`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {module for module in found if module in known and module != name}


def _graph() -> dict[str, set[str]]:
    modules = {name: path for name, path in _modules().items() if not name.startswith("exbe.sandbox")}
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state:
                found = walk(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def test_exbe_has_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_outside_the_sandbox_is_over_500_lines_without_saying_why() -> None:
    long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()
            if not name.startswith("exbe.sandbox")}
    unexplained = {name: lines for name, lines in long.items() if lines > MAX_LINES
                   and REASON not in "\n".join(_modules()[name].read_text(encoding="utf-8").splitlines()[:30])}
    assert not unexplained, f"over {MAX_LINES} lines with no '{REASON} ...' line near the top: {unexplained}"
