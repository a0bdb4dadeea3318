"""The package's shape (issue 18 item 2): no import cycle, no class over 300 lines, no function
over 60. Read with ast from the files, so nothing here is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "s5jtransfer"
NAME = PACKAGE.name
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60



def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def imports_of(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules a module imports, at module level or inside functions: `from . import x`,
    `from .x import y`, `from s5jtransfer import x`, `from s5jtransfer.x import y`, `import s5jtransfer.x`.
    A name that is not a module (`from . import __version__`) is the package's __init__."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == NAME and len(parts) > 1:
                    out.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and node.module.split(".")[0] == NAME:
                base = node.module.partition(".")[2] or None
            else:
                continue
            if base:
                out.add(base.split(".")[0])
            else:
                out.update(a.name if a.name in modules else "__init__" for a in node.names)
    return out & modules


def import_graph() -> dict[str, set[str]]:
    trees = _modules()
    return {name: imports_of(tree, set(trees)) - {name} for name, tree in trees.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as one cycle through
    it, e.g. ['a', 'b', 'a']."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(graph, set(g)) for g in groups]


def _cycle_through(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """One cycle inside a strongly connected group, from its first module (breadth-first, shortest)."""
    start = min(group)
    paths = {w: [start, w] for w in sorted(graph[start] & group)}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def too_long(tree: ast.Module) -> list[tuple[int, str, int]]:
    """(line, what, lines) of each class over MAX_CLASS_LINES and each function or method (nested
    ones too) over MAX_FUNCTION_LINES."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            limit, kind = MAX_CLASS_LINES, "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            limit, kind = MAX_FUNCTION_LINES, "def"
        else:
            continue
        lines = node.end_lineno - node.lineno + 1
        if lines > limit:
            out.append((node.lineno, f"{kind} {node.name}", lines))
    return out


def oversized() -> list[tuple[str, str, int]]:
    """too_long over the package's files, as (file:line, what, lines)."""
    return [(f"{NAME}/{name}.py:{line}", what, lines) for name, tree in _modules().items()
            for line, what, lines in too_long(tree)]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 10 and "config" in graph["verify"]  # the graph was read
    cycles = find_cycles(graph)
    assert not cycles, "modules that import each other (directly or round about): " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_no_class_over_300_lines_and_no_function_over_60():
    found = oversized()
    assert not found, "too long (split into parts with one job each): " + "; ".join(
        f"{where} {what}: {lines} lines" for where, what, lines in found)



# -- the checks themselves ---------------------------------------------------------------------
def test_imports_are_read_in_every_form_at_module_level_and_inside_functions():
    src = (
        "import os\n"
        "from . import a, b as bee\n"
        "from .c import thing\n"
        "from .d.sub import x\n"
        "from s5jtransfer import e\n"
        "from s5jtransfer.f import y\n"
        "import s5jtransfer.g\n"
        "from . import __version__\n"
        "from other.h import z\n"
        "def later():\n"
        "    from .i import w\n"
        "class K:\n"
        "    def m(self):\n"
        "        from . import j\n"
    )
    mods = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "__init__", "unused"}
    assert imports_of(ast.parse(src), mods) == {"a", "b", "c", "d", "e", "f", "g", "i", "j", "__init__"}


def test_cycles_are_found_direct_and_round_about():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert find_cycles({"s3": {"listing"}, "listing": {"tls"}, "tls": {"s3"}, "x": {"s3"}}) == [
        ["listing", "tls", "s3", "listing"]]
    assert len(find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == 2


def test_sizes_are_counted_for_classes_methods_and_nested_functions():
    body = "".join(f"    x{i} = {i}\n" for i in range(58))
    src = (f"def fits():\n{body}    return 0\n"  # 60 lines
           f"def over():\n{body}    y = 1\n    return y\n"  # 61
           "class K:\n    def m(self):\n        def inner():\n" + body.replace("    ", "            ")
           + "            a = 1\n            return a\n        return inner\n"
           + "".join(f"    v{i} = {i}\n" for i in range(240)))
    found = {what: lines for _line, what, lines in too_long(ast.parse(src))}
    assert found == {"def over": 61, "def inner": 61, "def m": 63, "class K": 304}
