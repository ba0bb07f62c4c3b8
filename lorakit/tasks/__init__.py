"""The tasks every run mode runs, by name: ``glue`` (a sequence classifier on GLUE or the embedded movie reviews) and
``lm`` (a causal LM on text, GSM8K or instructions). A task of one's own is a `Task` subclass, named in a command or a
sweep file as ``module:Class`` (the module importable from where the run starts)."""

import importlib

from lorakit.core.errors import ConfigError
from lorakit.tasks.base import Prepared, RunArguments, Task
from lorakit.tasks.glue.task import GlueClassification
from lorakit.tasks.lm.task import LanguageModelling

TASKS: dict[str, type[Task]] = {"glue": GlueClassification, "lm": LanguageModelling}
SCRIPTS = {"run_glue.py": "glue", "run_llm.py": "lm"}  # a sweep or pack file's `runner:`, the older spelling


def get_task(spec: str) -> Task:
    """The task named `spec`: a registered name, a script's name, or ``module:Class`` for a task defined elsewhere."""
    spec = SCRIPTS.get(spec, spec)
    if spec in TASKS:
        return TASKS[spec]()
    module, _, attribute = spec.partition(":")
    if not attribute:
        raise ConfigError(f"task: unknown task {spec!r} (known: {', '.join(TASKS)}, or module:Class)")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"task: cannot load {spec!r} ({type(err).__name__}: {err})") from None
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise ConfigError(f"task: {spec!r} is not a Task subclass")
    return found()


def as_task(task: Task | str) -> Task:
    """`task` itself, or the task a name or ``module:Class`` names."""
    return task if isinstance(task, Task) else get_task(task)


def task_spec(task: Task) -> str:
    """What names `task` in a command or a file: its registered name, else module:Class."""
    if TASKS.get(task.name) is type(task):
        return task.name
    return f"{type(task).__module__}:{type(task).__qualname__}"


__all__ = ["TASKS", "Prepared", "RunArguments", "Task", "as_task", "get_task", "task_spec"]
