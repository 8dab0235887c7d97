"""The image requirements files install every module the serving code imports in that image.

A static scan (``ast``) of ``service/``: starting from ``service.__main__``, follow every import
of a ``service`` module (at module level or inside a function, skipping ``if TYPE_CHECKING:``
blocks), collect the third-party top-level modules, map them to their distributions
(``importlib.metadata``) and require each one to be pinned in the image's requirements file or
to be a dependency of a pinned one (read from the installed packages' metadata). This is what
crashed the worker image before (``orjson`` missing); tests/test_deploy_stack.py builds and
runs the real images.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest

from tests.service_support import REPO_ROOT

SERVICE = REPO_ROOT / "service"
ENTRY = "service.__main__"
# Modules of service/ that an image never runs, and why:
NOT_IN_IMAGE = {
    # the API image serves with Redis only (`serve` with USFAD_REDIS_URL); the embedded mode's
    # in-process worker needs onnxruntime and lives in the worker image
    "api": {"service.bundles.bundle": "onnxruntime is the worker's", "service.bench": "a client tool"},
    "worker": {
        "service.api": "the HTTP API",
        "service.bench": "a client tool",
        "service.__main__:run_api": "`serve`, the API image's command",
        "service.__main__:build_app": "`serve`",
        "service.__main__:app_from_argv": "`serve --api-workers N`",
    },
}
# Installed by the worker Dockerfile's ONNXRUNTIME build argument, not by the requirements file.
BUILD_ARG_PACKAGES = {"worker": {"onnxruntime"}}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, module: str, skipped: dict[str, str]) -> set[str]:
    """Dotted names imported anywhere in ``path`` except under ``if TYPE_CHECKING:`` and in
    top-level functions listed in ``skipped`` as ``module:function``."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if function and f"{module}:{child.name}" in skipped:
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.add(child.module)
                names.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "service":
        return None
    candidate = SERVICE.joinpath(*parts[1:])
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def third_party_imports(image: str) -> dict[str, set[str]]:
    """Top-level third-party module -> the service modules importing it, reachable in ``image``."""
    seen: set[str] = set()
    todo = [ENTRY]
    found: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or module in NOT_IN_IMAGE[image] or path is None:
            continue
        seen.add(module)
        for name in _imports(path, module, NOT_IN_IMAGE[image]):
            top = name.split(".")[0]
            if top == "service":
                if _module_file(name) is not None:
                    todo.append(name)
                elif _module_file(name.rsplit(".", 1)[0]) is not None:
                    todo.append(name.rsplit(".", 1)[0])
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(module)
    return found


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(image: str) -> dict[str, str]:
    """Distribution -> version pinned in docker/requirements-<image>.txt."""
    pins = {}
    for line in (REPO_ROOT / "docker" / f"requirements-{image}.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_canonical(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def installed_closure(roots: set[str]) -> set[str]:
    """``roots`` and everything they depend on (not extras), from the installed metadata."""
    closure: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement or "extra==" in requirement:
                continue
            todo.append(_canonical(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]))
    return closure


@pytest.mark.parametrize("image", ["api", "worker"])
def test_every_module_the_image_imports_is_installed_by_its_requirements(image: str) -> None:
    distributions = metadata.packages_distributions()
    available = installed_closure(set(pinned(image)) | BUILD_ARG_PACKAGES.get(image, set()))
    missing = {}
    for module, importers in third_party_imports(image).items():
        owners = {_canonical(dist) for dist in distributions.get(module, [module])}
        if not owners & available:
            missing[module] = sorted(importers)
    assert not missing, f"docker/requirements-{image}.txt lacks what these modules import: {missing}"


@pytest.mark.parametrize("image", ["api", "worker"])
def test_image_pins_equal_the_project_pins(image: str) -> None:
    text = (REPO_ROOT / "pyproject.toml").read_text()
    project = {
        _canonical(name): version for name, version in re.findall(r'"([A-Za-z0-9_.\-]+)==([^";]+)', text)
    }
    for name, version in pinned(image).items():
        assert project.get(name) == version, f"{name}=={version} in requirements-{image}.txt vs pyproject"


def test_the_scan_finds_what_the_worker_really_imports() -> None:
    # the modules whose absence crashed the worker image, and the API's web stack
    worker, api = third_party_imports("worker"), third_party_imports("api")
    assert {"orjson", "numpy", "redis", "prometheus_client", "onnxruntime"} <= set(worker)
    assert "fastapi" not in worker and "onnxruntime" not in api
    assert {"fastapi", "uvicorn", "PIL", "pydantic", "orjson"} <= set(api)
