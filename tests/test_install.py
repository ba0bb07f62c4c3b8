"""`pip install .` installs three top-level packages, the card's two (`init_schemes`, `loraplus`) and `lorakit`, and
nothing else of the clone (its scripts, benchmarks, tests and command-line aliases stay there); they import from
anywhere, so a training script of one's own can apply Init[B] and LoRA+."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_install_holds_the_library_packages_only_and_they_import_outside_the_clone(tmp_path):
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*install, "--target", str(site), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == [
        "init_schemes", "lorakit", "loraplus",
    ]  # fmt: skip
    code = "from init_schemes import apply_init, InitSpec; from loraplus import create_loraplus_optimizer; "
    code += "import lorakit.tasks, init_schemes, loraplus; print(init_schemes.__file__, loraplus.__file__)"
    env = {**os.environ, "PYTHONPATH": str(site)}
    imported = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert all(path.startswith(str(site)) for path in imported.stdout.split())  # the installed copies, not the clone's
