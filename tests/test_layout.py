"""The layout the README's table states holds, read from the table itself: every folder of lorakit has a row, each
module imports only what its row allows (its own layer and the layers it names), the library packages import only
the third-party packages their rows name and nothing of lorakit, nothing imports a command-line script, project
modules are imported at module top and never loaded by a string, and no argument set is reached by position."""

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([\w/]+)/` \| .* \| (.*) \|$")
SOURCE = sorted(
    [*(ROOT / "lorakit").rglob("*.py"), *(ROOT / "init_schemes").glob("*.py"), *(ROOT / "loraplus").glob("*.py")]
)
PROJECT = ("lorakit", "init_schemes", "loraplus")
SCRIPTS_AND_SUITE = ("run_glue", "run_llm", "run_toy", "benchmarks", "tests")


def layout_table() -> dict[str, set[str]]:
    """Each folder of the README's table → what it may import: the names its row gives ("the above": every lorakit
    layer in an earlier row; "—": nothing)."""
    section = (ROOT / "README.md").read_text().split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    table, above = {}, []
    for line in section.splitlines():
        match = ROW.match(line.strip())
        if not match:
            continue
        folder, may = match.groups()
        layer = folder.removeprefix("lorakit/")
        if may.strip() == "the above":
            table[layer] = set(above)
        else:
            table[layer] = {name.strip(" `").lower() for name in may.split(",") if name.strip(" `—")}
        if folder.startswith("lorakit/"):
            above.append(layer)
    return table


TABLE = layout_table()


def absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an ImportFrom names, relative imports resolved against `path`'s package."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[: -node.level])
    return ".".join([*package, *([node.module] if node.module else [])])


def imports(path: Path) -> list[tuple[str, ast.AST]]:
    """Every module `path` imports (`from lorakit import tasks` as lorakit.tasks), with its import node."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node, path)
            if module in PROJECT:  # from lorakit import tasks: the subpackage is what is imported
                found += [(f"{module}.{alias.name}", node) for alias in node.names]
            else:
                found.append((module, node))
    return found


def test_every_folder_of_lorakit_and_each_library_package_has_a_row_in_the_readme_table():
    folders = {p.parent.relative_to(ROOT / "lorakit").parts[0] for p in (ROOT / "lorakit").glob("*/__init__.py")}
    assert folders - set(TABLE) == set(), "folders of lorakit without a row in the README's layout table"
    assert {"init_schemes", "loraplus"} <= set(TABLE)


@pytest.mark.parametrize("path", SOURCE, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_what_its_row_allows(path):
    parts = path.relative_to(ROOT).parts
    for module, _ in imports(path):
        top = module.split(".")[0]
        assert top not in SCRIPTS_AND_SUITE, f"{module}: nothing imports a script, a benchmark or a test"
        if parts[0] in ("init_schemes", "loraplus"):
            assert top in (parts[0], *TABLE[parts[0]]) or top in sys.stdlib_module_names, (
                f"{module}: {parts[0]} imports only the standard library and {sorted(TABLE[parts[0]])}"
            )
        elif top == "lorakit" and len(parts) > 2:  # lorakit/<layer>/…; lorakit's own __main__ is the command line
            layer = module.split(".")[1]
            assert layer in TABLE[parts[1]] | {parts[1]}, f"lorakit/{parts[1]} imports {module}"


@pytest.mark.parametrize("path", SOURCE, ids=lambda p: str(p.relative_to(ROOT)))
def test_project_modules_are_imported_at_module_top(path):
    tree = ast.parse(path.read_text())
    for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [absolute(node, path)]
                inside = [n for n in names if n.split(".")[0] in PROJECT]
                assert not inside, f"{path.name}:{node.lineno} imports {inside[0]} inside {function.name}"


def test_no_project_module_is_loaded_by_a_string_and_no_argument_set_by_position():
    for path in [*SOURCE, *ROOT.glob("run_*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"args\[[0-9]\]", text), path
        for loader in ("__import__(", "spec_from_file_location", "runpy", "exec("):
            assert loader not in text, f"{path}: {loader}"
        if path != ROOT / "lorakit" / "tasks" / "__init__.py":  # a task of one's own, named module:Class
            assert "import_module(" not in text, path
