"""The layout's promise, checked on the source: the core knows nothing of the world or of evaluation,
and the world plug-in and evaluation depend on the core only, never on each other."""

import ast
from pathlib import Path

import pytest

import dediffusion

PACKAGE = Path(dediffusion.__file__).parent
CORE = ("models", "train", "data", "config", "atomic", "records", "assets", "llm")
FORBIDDEN = {**{core: ("world", "eval", "cli") for core in CORE}, "eval": ("world", "cli"), "world": ("eval", "cli")}


def imported_modules(path: Path) -> set[str]:
    """Every `dediffusion.*` module `path` imports, relative imports resolved, at any depth in the file."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]  # e.g. ("dediffusion", "eval")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, *(node.module.split(".") if node.module else ())))
            found.update([module] if node.module else [f"{module}.{alias.name}" for alias in node.names])
    return {m for m in found if m.startswith("dediffusion.")}


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_the_import_walker_resolves_relative_imports(tmp_path):
    probe = PACKAGE / "eval" / "reconstruction.py"
    assert "dediffusion.models.sampling" in imported_modules(probe)
    assert "dediffusion.data.task" in imported_modules(probe)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_across_the_layers(path):
    forbidden = FORBIDDEN.get(layer_of(path), ())
    crossing = sorted(m for m in imported_modules(path) if m.split(".")[1] in forbidden)
    assert not crossing, f"{path.relative_to(PACKAGE)} imports {crossing}"
