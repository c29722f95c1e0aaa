"""The shape of the code: no import cycle among the modules of C{litedesk/}.

A cycle hidden by an import inside a function still ties the modules
together (neither can be understood, tested or moved without the other),
so every C{import} statement counts, wherever it is: at module level, in a
function, in a class, under C{try}.  Only imports under C{if TYPE_CHECKING:}
are left out: they never run, and annotations need them to name a type
from a module that depends on this one.

Edges are parsed with L{ast}, not observed by importing, so a module that
is only imported on some platforms or by a test still counts.  C{from P
import N} is an edge to C{P.N} when that is a module, else to the package
C{P} (its C{__init__}).  Implicit imports of parent packages are not edges
(every C{__init__} in C{litedesk/} is empty or imports nothing upward).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def module_names(top: Path, package: str) -> dict[str, Path]:
    """Every module and package under C{top} (the directory of C{package})."""
    out: dict[str, Path] = {}
    for path in sorted(top.rglob("*.py")):
        rel = path.relative_to(top).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """All import statements, skipping the bodies of C{if TYPE_CHECKING:}."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph(top: Path, package: str) -> dict[str, set[str]]:
    """For each module of C{package}, the modules of C{package} it imports."""
    modules = module_names(top, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    if not is_pkg:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                # "import litedesk.a.b" may name a module or a package.
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:  # noqa: C901 - Tarjan, kept in one piece
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        # Iterative DFS: (node, iterator over its successors).
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(graph[start]))))
        while work:
            node, succ = work[-1]
            advanced = False
            for nxt in succ:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def _cycle_path(graph: dict[str, set[str]], comp: list[str]) -> str:
    """One cycle through a component, as "a -> b -> a", for the failure message."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = prev[node]
                    path.append(start)
                    return " -> ".join([path[0], *reversed(path[1:-1]), path[-1]])
                if nxt not in prev:
                    prev[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return " <-> ".join(comp)


class ImportCycleTests(SynchronousTestCase):
    def test_no_import_cycle_in_litedesk(self) -> None:
        """No module of litedesk/ imports, directly or through others, a module that
        imports it back (imports inside functions included)."""
        graph = import_graph(ROOT / "litedesk", "litedesk")
        self.assertIn("litedesk.viewer.connection", graph["litedesk.viewer.cli"])
        found = cycles(graph)
        self.assertEqual(
            found,
            [],
            "import cycles:\n" + "\n".join(_cycle_path(graph, c) for c in found),
        )

    def _package(self, files: dict[str, str]) -> tuple[Path, str]:
        top = Path(self.mktemp()) / "pkg"
        for rel, text in files.items():
            p = top / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return top, "pkg"

    def test_finds_a_cycle_hidden_in_a_function(self) -> None:
        """The checker itself: a cycle closed by an import inside a function (and a
        relative one) is found and printed; a TYPE_CHECKING-only import is not an edge."""
        top, name = self._package(
            {
                "__init__.py": "",
                "a.py": "from pkg import b\n",
                "b.py": "def f():\n    from .sub import c\n",
                "sub/__init__.py": "",
                "sub/c.py": "import pkg.a\n",
                "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n",
                "e.py": "import pkg.d\n",
            }
        )
        graph = import_graph(top, name)
        self.assertEqual(graph["pkg.b"], {"pkg.sub.c"})
        self.assertEqual(graph["pkg.d"], set())
        found = cycles(graph)
        self.assertEqual(found, [["pkg.a", "pkg.b", "pkg.sub.c"]])
        self.assertEqual(_cycle_path(graph, found[0]), "pkg.a -> pkg.b -> pkg.sub.c -> pkg.a")
