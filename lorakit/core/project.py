"""Where lorakit runs from: a clone of the project (the scripts and launch/ beside the package) or an installed
package (site-packages). Subprocesses of a clone get it on their import path; an installed package needs nothing."""

import os
from pathlib import Path

ABOVE_PACKAGE = Path(__file__).resolve().parents[2]
CLONE = ABOVE_PACKAGE if (ABOVE_PACKAGE / "pyproject.toml").is_file() and (ABOVE_PACKAGE / "launch").is_dir() else None


def clone_file(relative: str) -> Path | None:
    """A file of the clone (run_glue.py, launch/…), or None when lorakit is installed or the clone lacks it."""
    path = CLONE / relative if CLONE else None
    return path if path is not None and path.exists() else None


def with_project_on_path(env: dict) -> dict:
    """`env` with the clone first on PYTHONPATH (an installed lorakit is importable as it is)."""
    if CLONE is None:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(CLONE), env.get("PYTHONPATH")]))}
