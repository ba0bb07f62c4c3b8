"""A reproduction scale: the stages `python -m lorakit.reproduce` runs, read from a YAML file.

    name: cpu
    stages:
      - {name: toy, kind: toy, settings: {widths: [128, 512, 2048], steps: 100}}   # run_toy.py's flags
      - {name: widthcheck, kind: widthcheck, settings: {seeds: 2}}                 # python -m lorakit.widthcheck's
      - name: minilm_sst2
        kind: sweep
        data: [glue]          # filled from --glue_dir (unset: the hub); also wikitext, gsm8k, flan, mmlu
        tie: 0.003            # best metric: |Init[A] − Init[B]| within this is a tie, in the metric's units
        chance: 0.5           # optional: the accuracy of guessing (default 1 / labels; the majority class's rate
                              # for an unbalanced task such as MRPC or CoLA)
        longer: {num_train_epochs: 2}   # optional: rerun each init's best lr (first seed) with these settings, to
                                        # see whether the best runs had stopped improving
        sweep: {task: glue, base: {task_name: sst2}, grid: {learning_rate: [1e-3, 2e-3], lora_init: [A, B],
                seed: [0, 1, 2]}}                  # a sweep file's mapping (data: [glue] sets its metric)

The shipped scales are `launch/reproduce/<name>.yaml` (quick, cpu, paper); `--scale` takes one of those names or the
path of a file of one's own.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.parsing import read_yaml
from lorakit.core.project import clone_file
from lorakit.sweeps.checks import NAME
from lorakit.tasks.classification import evaluated_metrics
from lorakit.tasks.glue.catalog import GLUE_TASKS
from lorakit.tasks.glue.data import split_file

KINDS = ("toy", "widthcheck", "sweep")
SHIPPED = ("quick", "cpu", "paper")
STAGE_KEYS = {"name", "kind", "settings", "sweep", "data", "tie", "chance", "longer"}
# A data option of the command → the run setting it fills (glue is special: see `glue_source`).
DATA_SETTINGS = {"glue": "glue_dir", "wikitext": "data_dir", "gsm8k": "data_dir", "flan": "train_file",
                 "mmlu": "mmlu_path"}  # fmt: skip
DATA_FLAGS = {"glue": "--glue_dir", "wikitext": "--wikitext_dir", "gsm8k": "--gsm8k_dir", "flan": "--flan_file",
              "mmlu": "--mmlu_dir"}  # fmt: skip


@dataclass
class Stage:
    name: str
    kind: str  # toy, widthcheck or sweep
    settings: dict = field(default_factory=dict)  # toy, widthcheck: their command's flags
    sweep: dict = field(default_factory=dict)  # sweep: a sweep file's mapping, without name and output_root
    data: list[str] = field(default_factory=list)
    tie: float | None = None
    chance: float | None = None  # a classifier's accuracy by guessing; default 1 / number of labels
    longer: dict = field(default_factory=dict)  # settings that train a run longer, for the check of convergence


@dataclass
class Scale:
    name: str
    path: Path
    stages: list[Stage]

    def select(self, names: list[str] | None) -> list[Stage]:
        """The stages named (all when None), in the scale's order; an unknown name is an error."""
        if not names:
            return self.stages
        known = [s.name for s in self.stages]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"--stages: {unknown[0]!r} is not a stage of {self.name} ({', '.join(known)})")
        return [s for s in self.stages if s.name in names]


def scale_file(scale: str) -> Path:
    """A shipped scale's file (a clone's launch/reproduce/<name>.yaml), else the path given."""
    if scale in SHIPPED:
        found = clone_file(f"launch/reproduce/{scale}.yaml")
        if found is None:
            raise ConfigError(f"--scale {scale}: the shipped scales are in a clone's launch/reproduce/; pass a path")
        return found
    path = Path(scale)
    if not path.is_file():
        raise ConfigError(f"--scale: {scale!r} is neither a shipped scale ({', '.join(SHIPPED)}) nor a file")
    return path


def read_stage(raw, where: str) -> Stage:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a stage must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - STAGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(STAGE_KEYS))})")
    name, kind = raw.get("name"), raw.get("kind")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be a plain folder name, got {name!r}")
    if kind not in KINDS:
        raise ConfigError(f"{where} ({name}): kind must be one of {', '.join(KINDS)}, got {kind!r}")
    where = f"{where} ({name})"
    stage = Stage(name, kind, *(typed(raw, key, where) for key in ("settings", "sweep", "data")))
    stage.tie, stage.chance, stage.longer = raw.get("tie"), raw.get("chance"), typed(raw, "longer", where)
    if kind == "sweep":
        check_sweep_stage(stage, where)
    elif stage.sweep or stage.data or stage.tie is not None or stage.chance is not None or stage.longer:
        raise ConfigError(f"{where}: sweep, data, tie, chance and longer are for sweep stages")
    return stage


def typed(raw: dict, key: str, where: str):
    """The stage's `key` (a mapping, or for data a list of names), empty when absent; another type is an error."""
    value = raw.get(key)
    wanted = list if key == "data" else dict
    if value is None:
        return wanted()
    if not isinstance(value, wanted) or (key == "data" and not all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{where}: {key} must be a {'list of names' if key == 'data' else 'mapping'}, got {value!r}")
    return value


def finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_sweep_stage(stage: Stage, where: str) -> None:
    if not stage.sweep:
        raise ConfigError(f"{where}: a sweep stage needs its sweep mapping")
    owned = [k for k in ("name", "output_root") if k in stage.sweep]
    if "glue" in stage.data and "metric" in stage.sweep:
        owned.append("metric")  # the task's primary metric, named as its runs report it (`glue_source`)
    if owned:
        raise ConfigError(f"{where}: sweep.{owned[0]} is set by the reproduction, not the scale file")
    if not finite_number(stage.tie) or stage.tie < 0:
        raise ConfigError(f"{where}: tie must be a number ≥ 0 in the metric's units, got {stage.tie!r}")
    if stage.chance is not None and not (finite_number(stage.chance) and 0 <= stage.chance < 1):
        raise ConfigError(f"{where}: chance must be an accuracy in [0, 1), got {stage.chance!r}")
    bad = [d for d in stage.data if d not in DATA_SETTINGS]
    if bad:
        raise ConfigError(f"{where}: data must list some of {', '.join(DATA_SETTINGS)}, got {bad[0]!r}")
    if "glue" in stage.data and "task_name" not in (stage.sweep.get("base") or {}):
        raise ConfigError(f"{where}: data: [glue] needs the stage's task_name in sweep.base")
    others = sorted(set(stage.sweep.get("grid") or {}) - {"learning_rate", "lora_init", "seed"})
    if stage.longer and others:
        raise ConfigError(f"{where}: longer needs a grid of learning_rate, lora_init and seed only, not {others[0]}")


def load_scale(scale: str) -> Scale:
    """Read and check a scale file: every problem is a one-line ConfigError."""
    path = scale_file(scale)
    raw = read_yaml(path, "scale") or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise ConfigError(f"{path}: a scale is a mapping with a non-empty list of stages")
    stages = [read_stage(entry, f"{path}: stage {i + 1}") for i, entry in enumerate(raw["stages"])]
    names = [s.name for s in stages]
    if len(set(names)) < len(names):
        raise ConfigError(f"{path}: two stages are named {next(n for n in names if names.count(n) > 1)!r}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{path}: the scale's name must be a plain folder name, got {name!r}")
    return Scale(name, path, stages)


def glue_source(task_name: str, glue_dir: Path | None) -> tuple[dict, str, str]:
    """The settings that read a GLUE task from `glue_dir` (None: the hub), a note saying what they read, and the
    name its runs give the task's primary metric (on the first evaluation set, when there are several). A folder
    without the task's train split (see ../shared/data/MANIFEST.md for the one here) gives its dev split, of which
    each run trains on a seeded part and is tested on the rest."""
    task = GLUE_TASKS.get(task_name)
    if task is None or task.glue_dir is None:
        raise ConfigError(f"data: [glue]: {task_name!r} is not a GLUE task")
    if glue_dir is None:
        metric = evaluated_metrics(task, list(task.eval_files))[1]
        return {}, f"{task_name}: the hub (no --glue_dir given)", f"eval_{metric}"
    folder = glue_dir / task.glue_dir
    evals = [split for split, stem in task.eval_files.items() if split_file(folder, stem, required=False)]
    if split_file(folder, "train", required=False) and evals:
        note = f"{folder}: train split, evaluated on {', '.join(task.eval_files[s] for s in evals)}"
        return {"glue_dir": str(glue_dir)}, note, f"eval_{evaluated_metrics(task, evals)[1]}"
    if not evals:
        raise ConfigError(f"--glue_dir: {folder} holds no dev file of {task_name}")
    dev = split_file(folder, task.eval_files[evals[0]], required=False)
    note = f"{dev}: no train split in {folder}; each run trains on a seeded part of this dev split, tested on the rest"
    return {"train_file": str(dev)}, note, f"eval_{evaluated_metrics(task, ['validation'])[1]}"
