"""The layout the README's table states holds: each layer of lorakit imports only from the layers above it, the
library packages import nothing of the project, nothing imports a command-line script, no project module is loaded
by a string, and no argument set is reached by position."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["core", "models", "training", "packing", "tasks", "runs", "sweeps"]  # each may import the ones before it
APART = {"toy": ["core", "training"]}  # layers outside the chain, and what they may import
SOURCE = sorted(
    [*(ROOT / "lorakit").rglob("*.py"), *(ROOT / "init_schemes").glob("*.py"), *(ROOT / "loraplus").glob("*.py")]
)


def imported_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def allowed(layer: str) -> set[str]:
    if layer in APART:
        return {layer, *APART[layer]}
    return set(LAYERS[: LAYERS.index(layer) + 1]) if layer in LAYERS else set(LAYERS)


@pytest.mark.parametrize("path", SOURCE, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_the_layers_above_its_own(path):
    parts = path.relative_to(ROOT).parts
    for module in imported_modules(path):
        assert module.split(".")[0] not in ("run_glue", "run_llm", "run_toy", "benchmarks", "tests"), module
        if parts[0] in ("init_schemes", "loraplus"):
            assert module.split(".")[0] != "lorakit", f"{module}: the library packages import nothing of lorakit"
        elif module.startswith("lorakit.") and len(parts) > 2:
            assert module.split(".")[1] in allowed(parts[1]), f"{parts[1]} imports {module}"


def test_no_project_module_is_loaded_by_a_string_and_no_argument_set_by_position():
    for path in [*SOURCE, *ROOT.glob("run_*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"args\[[0-9]\]", text), path
        if path != ROOT / "lorakit" / "tasks" / "__init__.py":  # a task of one's own, named module:Class
            assert "import_module(" not in text, path
