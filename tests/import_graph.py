"""The project's own import graph, read from the source (no module is imported).

Every `import radiodiff...` / `from pipelines... import ...` counts, at module level or inside a
function (a lazy import runs too), except those under `if TYPE_CHECKING:`, which never run.
Importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, so a closure includes them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("radiodiff", "pipelines")


def module_file(name: str) -> Path | None:
    """The source file of a project module (`a.b` -> a/b.py or a/b/__init__.py), None if absent."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    """The dotted name of a project source file."""
    parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> list[str]:
    """Every module of the project's packages."""
    return sorted(module_name(p) for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Import statements that run, anywhere in the tree (TYPE_CHECKING blocks skipped)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


@cache
def direct_imports(name: str) -> frozenset[str]:
    """The project modules that module `name` imports directly."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif node.level:  # relative: resolve against this module's package
            package = name.split(".")[: -node.level] if path.name != "__init__.py" else name.split(".")
            base = ".".join(package + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] in PACKAGES and module_file(target) is not None:
                found.add(target)
    return frozenset(found)


def with_parents(name: str) -> list[str]:
    """`a.b.c` -> [a, a.b, a.b.c]: the packages whose __init__ runs when it is imported."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def closure(start: str) -> set[str]:
    """Every project module that running `start` can import, `start` and parent packages included."""
    seen: set[str] = set()
    todo = with_parents(start)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        for target in direct_imports(name):
            todo.extend(with_parents(target))
    return seen


def unit(name: str) -> str:
    """The unit a module belongs to for the folder-level picture: its subpackage of
    radiodiff (radiodiff.bank), a top-level module (radiodiff.flux), or pipelines."""
    parts = name.split(".")
    if parts[0] == "pipelines" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def stage_module(cmd: str) -> str:
    """The module a dvc.yaml stage runs: `python -m pipelines.x ...` -> pipelines.x."""
    words = cmd.split()
    return words[words.index("-m") + 1]


def source_files(start: str) -> set[Path]:
    """The source files of `closure(start)`, relative to the project root."""
    return {module_file(name).relative_to(ROOT) for name in closure(start)}


def covering_deps(files: set[Path]) -> list[str]:
    """A short list of dvc.yaml deps that covers `files`: a package folder where every source
    file under it is in `files` (its data files come with it), else the files one by one and
    the folder's data files."""
    def cover(folder: Path) -> list[str]:
        sources = {p.relative_to(ROOT) for p in (ROOT / folder).rglob("*.py")}
        if sources and sources <= files:
            return [folder.as_posix()]
        found = [f.as_posix() for f in sorted(files) if f.parent == folder]
        if found:  # data files the folder's modules read (the shipped geometry)
            found += sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob("*.npz"))
        for sub in sorted(p for p in (ROOT / folder).iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            found += cover(sub.relative_to(ROOT))
        return found

    return [dep for package in PACKAGES for dep in cover(Path(package))]


def uncovered(files: set[Path], deps: list[str]) -> list[str]:
    """The files of `files` that no dep (a file, or a folder above it) covers."""
    roots = [Path(dep) for dep in deps]
    return sorted(f.as_posix() for f in files if not any(f == r or r in f.parents for r in roots))


if __name__ == "__main__":  # print each dvc.yaml stage's code deps, to paste after a refactor
    import yaml

    for stage_name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        print(f"{stage_name}:")
        for dep in covering_deps(source_files(stage_module(stage["cmd"]))):
            print(f"  - {dep}")
