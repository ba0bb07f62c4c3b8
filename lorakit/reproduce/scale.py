"""A reproduction scale: the stages `python -m lorakit.reproduce` runs, read from a YAML file.

    name: cpu
    stages:
      - {name: toy, kind: toy, settings: {widths: [128, 512, 2048], steps: 100}}   # run_toy.py's flags
      - {name: widthcheck, kind: widthcheck, settings: {seeds: 2}}                 # python -m lorakit.widthcheck's
      - name: minilm_sst2
        kind: sweep
        data: [glue]          # filled from --glue_dir (unset: the hub); also wikitext, gsm8k, flan, mmlu
        tie: 0.003            # best metric: |Init[A] − Init[B]| within this is a tie, in the metric's units
        sweep: {task: glue, base: {task_name: sst2}, grid: {learning_rate: [1e-3, 2e-3], lora_init: [A, B],
                seed: [0, 1, 2]}, metric: eval_accuracy}                           # a sweep file's mapping

The shipped scales are `launch/reproduce/<name>.yaml` (quick, cpu, paper); `--scale` takes one of those names or the
path of a file of one's own.
"""

from dataclasses import dataclass, field
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.parsing import read_yaml
from lorakit.core.project import clone_file
from lorakit.tasks.glue.catalog import GLUE_TASKS

KINDS = ("toy", "widthcheck", "sweep")
SHIPPED = ("quick", "cpu", "paper")
STAGE_KEYS = {"name", "kind", "settings", "sweep", "data", "tie"}
# A data option of the command → the run setting it fills (glue is special: see `glue_source`).
DATA_SETTINGS = {"glue": "glue_dir", "wikitext": "data_dir", "gsm8k": "data_dir", "flan": "train_file",
                 "mmlu": "mmlu_path"}  # fmt: skip
DATA_FLAGS = {"glue": "--glue_dir", "wikitext": "--wikitext_dir", "gsm8k": "--gsm8k_dir", "flan": "--flan_file",
              "mmlu": "--mmlu_dir"}  # fmt: skip
DATA_SUFFIXES = (".tsv", ".jsonl", ".json", ".csv")


@dataclass
class Stage:
    name: str
    kind: str  # toy, widthcheck or sweep
    settings: dict = field(default_factory=dict)  # toy, widthcheck: their command's flags
    sweep: dict = field(default_factory=dict)  # sweep: a sweep file's mapping, without name and output_root
    data: list[str] = field(default_factory=list)
    tie: float | None = None


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
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{where}: name must be a plain folder name, got {name!r}")
    if kind not in KINDS:
        raise ConfigError(f"{where} ({name}): kind must be one of {', '.join(KINDS)}, got {kind!r}")
    stage = Stage(name, kind, raw.get("settings") or {}, raw.get("sweep") or {}, raw.get("data") or [], raw.get("tie"))
    if not isinstance(stage.settings, dict) or not isinstance(stage.sweep, dict):
        raise ConfigError(f"{where} ({name}): settings and sweep must be mappings")
    if kind == "sweep":
        check_sweep_stage(stage, f"{where} ({name})")
    elif stage.sweep or stage.data or stage.tie is not None:
        raise ConfigError(f"{where} ({name}): sweep, data and tie are for sweep stages")
    return stage


def check_sweep_stage(stage: Stage, where: str) -> None:
    if not stage.sweep:
        raise ConfigError(f"{where}: a sweep stage needs its sweep mapping")
    owned = [k for k in ("name", "output_root") if k in stage.sweep]
    if owned:
        raise ConfigError(f"{where}: sweep.{owned[0]} is set by the reproduction (its stage name and output folder)")
    if not isinstance(stage.tie, int | float) or isinstance(stage.tie, bool) or stage.tie < 0:
        raise ConfigError(f"{where}: tie must be a number ≥ 0 in the metric's units, got {stage.tie!r}")
    bad = [d for d in stage.data if d not in DATA_SETTINGS] if isinstance(stage.data, list) else [stage.data]
    if bad:
        raise ConfigError(f"{where}: data must list some of {', '.join(DATA_SETTINGS)}, got {bad[0]!r}")
    if "glue" in stage.data and "task_name" not in (stage.sweep.get("base") or {}):
        raise ConfigError(f"{where}: data: [glue] needs the stage's task_name in sweep.base")


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
    return Scale(str(raw.get("name") or path.stem), path, stages)


def first_file(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{suffix}" for suffix in DATA_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    return found[0] if found else None


def glue_metric(task_name: str, eval_splits: list[str]) -> str:
    """The name a run gives the task's primary metric on its first evaluation split (runs with several evaluation
    sets, MNLI's matched and mismatched, prefix each metric with its split)."""
    primary = GLUE_TASKS[task_name].primary_metric
    return f"eval_{primary}" if len(eval_splits) == 1 else f"eval_{eval_splits[0]}_{primary}"


def glue_source(task_name: str, glue_dir: Path | None) -> tuple[dict, str, str]:
    """The settings that read a GLUE task from `glue_dir` (None: the hub), a note saying what they read, and the
    metric the runs will report. A folder without the task's train split (see ../shared/data/MANIFEST.md for the one
    here) gives its dev split, of which each run trains on a seeded part and evaluates on the rest."""
    task = GLUE_TASKS.get(task_name)
    if task is None or task.glue_dir is None:
        raise ConfigError(f"data: [glue]: {task_name!r} is not a GLUE task")
    if glue_dir is None:
        return {}, f"{task_name}: the hub (no --glue_dir given)", glue_metric(task_name, list(task.eval_files))
    folder = glue_dir / task.glue_dir
    evals = [split for split, stem in task.eval_files.items() if first_file(folder, stem)]
    if first_file(folder, "train") and evals:
        note = f"{folder}: train split, evaluated on {', '.join(task.eval_files[s] for s in evals)}"
        return {"glue_dir": str(glue_dir)}, note, glue_metric(task_name, evals)
    if not evals:
        raise ConfigError(f"--glue_dir: {folder} holds no dev file of {task_name}")
    dev = first_file(folder, task.eval_files[evals[0]])
    note = f"{dev}: no train split in {folder}; each run trains on a seeded part of this dev split, tested on the rest"
    return {"train_file": str(dev)}, note, glue_metric(task_name, ["validation"])
