"""A pack file: the task and the members' command lines of one pack, as the sweep tool writes it
(``{"task": "glue", "members": [argv, …]}``; ``"runner": "run_glue.py"`` is the older spelling)."""

from pathlib import Path

from lorakit.core.atomic import write_json_atomic
from lorakit.core.errors import ConfigError
from lorakit.core.run_folder import read_json_file
from lorakit.tasks import get_task
from lorakit.tasks.base import Task


def read_pack_file(path: Path) -> tuple[Task, list[list[str]]]:
    """The task and the members' argvs of a pack file; a malformed one is a one-line error."""
    spec = read_json_file(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("task") or spec.get("runner"), str):
        raise ConfigError(f"{path}: not a pack file (a JSON object with task and members)")
    members = spec.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, list) for m in members):
        raise ConfigError(f"{path}: members must be a non-empty list of argument lists")
    return get_task(spec.get("task") or spec["runner"]), [[str(a) for a in member] for member in members]


def write_pack_file(path: Path, task: str, members: list[list[str]]) -> None:
    write_json_atomic(path, {"task": task, "members": members})
