"""The project's own import graph, read from the source (every `import` statement, function-level ones included;
`if TYPE_CHECKING:` blocks excluded, as they never run). dvc.yaml's code dependencies are derived from it, and
the tests use it to find cycles."""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class CodeGraph:
    """Modules of the package rooted at `src/<package>` and the project modules each one imports (`edges`: the
    import statements; reaching a module also runs its parent packages' __init__)."""

    src: Path
    package: str = "lifecycle"

    @cached_property
    def files(self) -> dict[str, Path]:
        """Module name -> source file (a package's module is its __init__.py)."""
        root = self.src / self.package
        modules = {}
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(self.src).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        return modules

    @cached_property
    def edges(self) -> dict[str, set[str]]:
        return {name: self._imports(name, path) for name, path in self.files.items()}

    def _imports(self, module: str, path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in _running_nodes(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.module, node.level)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        targets = {self._known(name) for name in found}
        return {t for t in targets if t is not None and t != module}

    def _known(self, name: str) -> str | None:
        """The project module `name` refers to (an attribute import resolves to its module), or None."""
        while name and name not in self.files:
            name = name.rpartition(".")[0]
        return name or None

    def _parents(self, module: str) -> set[str]:
        """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))} & set(self.files)

    def reachable(self, roots: Iterable[str]) -> dict[str, str | None]:
        """Every module reachable from `roots`, with the module that first imported it (None for a root)."""
        parent: dict[str, str | None] = {}
        queue: deque[str] = deque()
        for root in roots:
            if root not in self.files:
                raise KeyError(f"no module {root} under {self.src}")
            parent.setdefault(root, None)
            queue.append(root)
        while queue:
            module = queue.popleft()
            for target in sorted(self.edges[module] | self._parents(module)):
                if target not in parent:
                    parent[target] = module
                    queue.append(target)
        return parent

    def chain(self, parents: dict[str, str | None], module: str) -> list[str]:
        """The import chain from a root to `module`."""
        path = [module]
        while (previous := parents[path[-1]]) is not None:
            path.append(previous)
        return path[::-1]

    def package_modules(self, package: str) -> list[str]:
        return [name for name in self.files if name == package or name.startswith(package + ".")]

    def cycles(self) -> list[list[str]]:
        """Strongly connected groups of more than one module (import cycles), each sorted."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        groups: list[list[str]] = []

        def visit(node: str) -> None:  # Tarjan's algorithm
            index[node] = low[node] = len(index)
            stack.append(node)
            on_stack.add(node)
            for target in self.edges[node]:
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

        for module in sorted(self.files):
            if module not in index:
                visit(module)
        return groups


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _running_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node that can run: the bodies of `if TYPE_CHECKING:` blocks are skipped."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
