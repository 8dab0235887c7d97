"""The package's import graph (read with ``ast``, nothing imported): no circles, and the
service never imports training code, torch or anomalib (docs/architecture.md).

Imports inside functions count too: a lazy import still closes a circle when it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("models", "training", "service")
# The service's images install neither (docker/requirements-api.txt, requirements-worker.txt).
SERVICE_FORBIDDEN = ("training", "torch", "torchvision", "anomalib", "timm", "FrEIA")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if ".venv" not in path.parts
    }


def _imported(path: Path, module: str) -> set[str]:
    """Every module an ``import`` in ``path`` names (``from a import b``: ``a`` and ``a.b``)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target in _imported(path, name) if target in modules and target != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_covers_the_packages_and_their_lazy_imports() -> None:
    graph = _graph()
    assert {"models.flows.flow", "training.cli", "service.api"} <= set(graph)
    assert "training.image.run" in graph["training.runs"]  # imported inside load_scorer


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_service_never_imports_training_torch_or_anomalib() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in _modules().items()
        if name.split(".")[0] == "service"
        for target in _imported(path, name)
        if target.split(".")[0] in SERVICE_FORBIDDEN
    )
    assert offenders == []


def test_no_test_module_imports_another() -> None:
    """Shared code lives in conftest.py (constants, fixtures) and plain ``*_support`` modules."""
    offenders = sorted(
        f"{path.name} imports {target}"
        for path in sorted((REPO_ROOT / "tests").glob("*.py"))
        for target in _imported(path, f"tests.{path.stem}")
        if target.split(".")[:2] != ["tests", path.stem] and target.startswith("tests.test_")
    )
    assert offenders == []


def test_service_package_files_import_nothing() -> None:
    """``service/queue/__init__.py``, ``service/bundles/__init__.py`` …: docstrings only.

    Importing ``service.bundles.manifest`` runs ``service/bundles/__init__.py`` first; an import
    there would load ``bundle.py`` (onnxruntime) into the API, whose image does not install it.
    """
    offenders = sorted(
        name
        for name, path in _modules().items()
        if name.split(".")[0] == "service" and path.name == "__init__.py" and _imported(path, name)
    )
    assert offenders == []
