"""`pip install .` installs three top-level packages, the card's two (`init_schemes`, `loraplus`) and `lorakit`, and
nothing else of the clone (its scripts, benchmarks, tests and command-line aliases stay there); they import from
anywhere, so a training script of one's own can apply Init[B] and LoRA+, and an installed lorakit runs a sweep's
points through `python -m lorakit run`, as it has no scripts beside it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = """
from init_schemes import apply_init, InitSpec
from loraplus import create_loraplus_optimizer
import init_schemes, loraplus
from lorakit.core.project import CLONE
from lorakit.sweeps.spec import Point
print(init_schemes.__file__, loraplus.__file__)
print(CLONE, *Point({}, {"max_steps": 1}, "id", "runs/id", "glue").command("python")[:5])
"""


def source_copy(destination: Path) -> Path:
    """The clone's files as a fresh clone has them (what git tracks or would track), without build leftovers."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode == 0:
        for name in listed.stdout.splitlines():
            if (ROOT / name).is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, destination / name)
    else:  # not a git checkout: everything but what a build or a run leaves
        ignored = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".venv", "outputs", ".*")
        shutil.copytree(ROOT, destination, ignore=ignored, dirs_exist_ok=True)
    return destination


def test_an_install_holds_the_library_packages_only_and_they_import_outside_the_clone(tmp_path):
    site, source = tmp_path / "site", source_copy(tmp_path / "source")
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*install, "--target", str(site), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == [
        "init_schemes", "lorakit", "loraplus",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    imported = subprocess.run([sys.executable, "-c", IMPORTS], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr[-2000:]
    files, command = (line.split() for line in imported.stdout.splitlines()[-2:])
    assert all(path.startswith(str(site)) for path in files)  # the installed copies, not the clone's
    assert command == ["None", "python", "-m", "lorakit", "run", "glue"]  # no clone: no script path into site-packages
