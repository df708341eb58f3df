"""Data flows one way: the core (everything in studio/ but the app layer and the UI) imports neither
of them, nor training/, nor gradio at module level; training/ imports neither the app layer nor the UI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted(p for p in (ROOT / "studio").rglob("*.py") if not p.relative_to(ROOT / "studio").parts[0] in ("app", "ui"))
TRAINING = sorted((ROOT / "training").rglob("*.py"))


def module_level_imports(path: Path) -> set[str]:
    """Modules imported outside functions (a lazy import inside a function is the exception the style allows)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if top and isinstance(child, ast.Import):
                names.update(a.name for a in child.names)
            elif top and isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names.add(child.module)
            visit(child, top and not in_function)

    visit(tree, True)
    return names


def all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_core_is_found():
    assert {"camera.py", "codec.py", "rewards.py", "video.py"} <= {p.name for p in CORE}
    assert not any("app" in p.relative_to(ROOT / "studio").parts[:1] for p in CORE)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_app_ui_or_trainer(path):
    bad = {n for n in all_imports(path) if n.split(".")[0] == "training" or n.startswith(("studio.app", "studio.ui"))}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    assert "gradio" not in {n.split(".")[0] for n in module_level_imports(path)}


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_trainer_imports_no_app_or_ui(path):
    bad = {n for n in all_imports(path) if n.startswith(("studio.app", "studio.ui", "app"))}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
