"""The package's layout, read from the source: no import cycle, a pure core, small modules, and an
analysis named only where analyses live."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("batch", "local_stack")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports, anywhere in its source (function bodies and
    `TYPE_CHECKING` blocks too), plus the packages a module's import runs first (its parents)."""
    files = {module_name(p, root): p for package in packages for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, package)
                for alias in node.names:
                    child = f"{base}.{alias.name}"
                    imported.add(child if child in files else base)
        targets = {_known(m, files) for m in imported} - {None, name}
        graph[name] = {t for t in targets if t is not None} | set(_parents(name, files)) - {name}
    return graph


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _known(module: str, files: dict[str, Path]) -> str | None:
    """`module`, or the nearest package of ours above it (`batch.x.y` when only `batch.x` exists)."""
    while module and module not in files:
        module = module.rpartition(".")[0]
    return module or None


def _parents(name: str, files: dict[str, Path]) -> Iterator[str]:
    parts = name.split(".")
    for end in range(1, len(parts)):
        parent = ".".join(parts[:end])
        if parent in files:
            yield parent


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph(ROOT, PACKAGES)) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.sub.b"]]


#: What each subpackage may import from the others, as its `__init__` says (the pure core: nothing
#: with I/O, nor the config loader).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "batch.core": ("batch.config.model",),
    "batch.config": ("batch.core", "batch.analyses.registry"),
    "batch.analyses": ("batch.core", "batch.config.model", "batch.aws", "batch.storage", "batch.faces"),
    "batch.aws": ("batch.core", "batch.config.model"),
    "batch.storage": ("batch.core", "batch.config.model", "batch.aws", "batch.analyses.registry"),
    "batch.faces": (
        "batch.core",
        "batch.config.model",
        "batch.aws",
        "batch.analyses.base",
        "batch.analyses.face_crops",
    ),
    "batch.query": ("batch.core", "batch.analyses.registry", "batch.storage"),
    "batch.report": (
        "batch.core",
        "batch.config.model",
        "batch.analyses.registry",
        "batch.aws",
        "batch.storage",
    ),
    "batch.run": (
        "batch.core",
        "batch.config",
        "batch.analyses",
        "batch.aws",
        "batch.storage",
        "batch.report",
    ),
}


def test_each_subpackage_imports_only_what_its_init_allows() -> None:
    graph = import_graph(ROOT, PACKAGES)
    beyond = {
        (module, target)
        for module, targets in graph.items()
        for package, allowed in MAY_IMPORT.items()
        if module.startswith(package + ".") or module == package
        for target in targets
        if target.startswith("batch.") and not target.startswith((package, *allowed))
    }
    assert beyond == set()


def test_the_local_stack_and_the_job_share_only_the_pure_core() -> None:
    graph = import_graph(ROOT, PACKAGES)
    crossing = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if module.split(".")[0] != target.split(".")[0] and target != "batch"
    }
    # `python -m batch.local` is the documented alias of `python -m local_stack`; the local endpoint
    # may use the job's pure core (its token bucket), nothing with I/O.
    assert {(m, t) for m, t in crossing if not t.startswith("batch.core.")} == {
        ("batch.local.__main__", "local_stack.__main__")
    }


def test_the_job_keeps_at_most_8_modules_at_its_top_level() -> None:
    top_level = sorted(path.name for path in (ROOT / "batch").glob("*.py"))
    assert len(top_level) <= 8, top_level


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_over_600_lines(package: str) -> None:
    files = (ROOT / package).rglob("*.py")
    lines = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in files}
    assert {path: n for path, n in lines.items() if n > 600} == {}


def test_only_the_analyses_faces_and_cli_name_the_face_analyses() -> None:
    allowed = ("batch/analyses/", "batch/faces/", "batch/cli/")
    pattern = re.compile(r"index_faces|compare_faces|face_search")
    named = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "batch").rglob("*.py")
        if not str(path.relative_to(ROOT)).startswith(allowed) and pattern.search(path.read_text())
    )
    assert named == []
