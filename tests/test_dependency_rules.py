"""The layout's dependency rules, read from the source (no imports run): the pipeline never
imports the views or the model server, the views never import the server, and no module
reaches into another package's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models", "analysis", "serving", "streaming", "cli")
# package -> packages it must never import
FORBIDDEN = {
    "pipeline": ("analysis", "serving", "streaming", "cli"),
    "models": ("analysis", "serving", "streaming", "cli"),
    "analysis": ("serving", "streaming", "cli"),
    "serving": ("analysis", "streaming", "cli"),
    "streaming": ("analysis", "serving", "cli"),
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_may(package):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _modules(package)
        for module, _, line in _imports(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_uses_another_packages_private_names():
    wrong = []
    for path in (
        [p for package in PACKAGES for p in _modules(package)]
        + sorted(ROOT.glob("*.py"))
        + sorted((ROOT / "scripts").glob("*.py"))
        + sorted((ROOT / "benchmarks").glob("*.py"))
    ):
        own = path.relative_to(ROOT).parts[0]
        tree = ast.parse(path.read_text(), str(path))
        imported_modules = {}
        for module, names, line in _imports(path):
            other = module.split(".")[0] != own
            if other and module.split(".")[0] in PACKAGES:
                wrong += [
                    f"{path.relative_to(ROOT)}:{line} imports {module}.{name}"
                    for name in names
                    if name.startswith("_")
                ]
                imported_modules.update({name: module for name in names})
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
            ):
                wrong.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}"
                )
    assert not wrong, "\n".join(wrong)


def test_node_ids_are_defined_once():
    """Node ids live in pipeline/names.py; a second definition drifts."""
    names = ast.parse((ROOT / "pipeline" / "names.py").read_text())
    ids = {
        node.value.value
        for node in ast.walk(names)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id.endswith("_ID") for t in node.targets)
    }
    assert {"CsvExampleGen", "Evaluator", "Pusher", "LeakageCheck"} <= ids
    again = []
    for package in PACKAGES:
        for path in _modules(package):
            if path.name == "names.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Constant)
                    and node.value.value in ids
                ):
                    again.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.value!r}")
    assert not again, "\n".join(again)
