"""What a module imports, read from its source: for the tests that keep the
stock RustDesk emulators independent of LiteDesk's own code."""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["module_imports"]


def module_imports(path: str | Path) -> tuple[set[str], set[str]]:
    """The modules a source file imports, anywhere in it (inside functions too).

    @return: C{(absolute, relative)}: absolute module names (C{import a.b},
        C{from a.b import c}), and the module part of relative imports
        (C{from .x import y} gives C{"x"}).
    """
    tree = ast.parse(Path(path).read_text())
    absolute: set[str] = set()
    relative: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            (absolute if node.level == 0 else relative).add(node.module or "")
    return absolute, relative
