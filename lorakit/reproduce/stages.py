"""Running a reproduction's stages, each into ``<output_dir>/<stage>/``: the toy sweep (`lorakit.toy.experiment`),
the width check (`lorakit.widthcheck`) and sweeps of real runs (`lorakit.sweeps`, from the ``sweep.yaml`` written
there). Each resumes on its own, so a killed reproduction rerun repeats no finished run; the seconds spent on each
stage, over every invocation, add up in ``timings.json``."""

import copy
import time
from pathlib import Path

import yaml

from lorakit.core.atomic import replace_atomically, write_json_atomic
from lorakit.core.errors import ConfigError
from lorakit.core.parsing import parse_args, settings_to_argv
from lorakit.core.run_folder import read_json_file
from lorakit.reproduce.scale import DATA_FLAGS, DATA_SETTINGS, Stage, glue_source
from lorakit.sweeps import __main__ as sweeps_command
from lorakit.sweeps.spec import load_sweep, validate
from lorakit.toy import experiment
from lorakit.toy.arguments import ToyArguments
from lorakit.widthcheck import __main__ as widthcheck_command
from lorakit.widthcheck.arguments import WidthCheckArguments

TIMINGS, STAGE_RECORD, SWEEP_FILE = "timings.json", "stage.json", "sweep.yaml"
INTERRUPTED = 130


def stage_argv(stage: Stage, output_dir: Path) -> list[str]:
    return [*settings_to_argv(stage.settings), "--output_dir", str(output_dir / stage.name)]


def sweep_mapping(stage: Stage, output_dir: Path, data: dict[str, Path | None]) -> tuple[dict, str]:
    """The stage's sweep file with its data filled in from the command's data options (unset: the hub), and a note
    saying where each part of the data comes from. A GLUE stage's metric is its task's primary one, named as its
    runs will report it (MNLI from the hub reports each of its two evaluation sets)."""
    mapping = copy.deepcopy(stage.sweep)
    base, notes = dict(mapping.get("base") or {}), []
    for option in stage.data:
        path = data.get(option)
        if option == "glue":
            settings, note, mapping["metric"] = glue_source(base["task_name"], path)
        elif path is None:
            settings, note = {}, f"{option}: the hub (no {DATA_FLAGS[option]} given)"
        else:
            settings, note = {DATA_SETTINGS[option]: str(path)}, f"{option}: {path}"
        base |= settings
        notes.append(note)
    mapping |= {"name": stage.name, "output_root": str(output_dir / stage.name), "base": base}
    return mapping, "; ".join(notes) or "the defaults of the sweep's settings"


def write_sweep_file(stage: Stage, output_dir: Path, data: dict[str, Path | None]) -> Path:
    """``<output_dir>/<stage>/sweep.yaml`` (the same file for the same data, so its runs keep their ids) and
    ``stage.json``, the stage's record for the report."""
    mapping, note = sweep_mapping(stage, output_dir, data)
    folder = output_dir / stage.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SWEEP_FILE
    header = f"# Written by python -m lorakit.reproduce (stage {stage.name}); data: {note}\n"
    text = header + yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True)
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    write_json_atomic(folder / STAGE_RECORD, {"stage": stage.name, "kind": stage.kind, "data": note, "tie": stage.tie})
    return path


def check_stage(stage: Stage, output_dir: Path, data: dict[str, Path | None]) -> str:
    """Parse every run of the stage with its runner's own parser (nothing trains); returns what was checked."""
    argv = stage_argv(stage, output_dir)
    if stage.kind == "toy":
        (args,) = parse_args((ToyArguments,), argv)
        args.validate()
        return f"{len(args.widths)} widths × {len(args.learning_rates())} lrs × {len(args.seeds)} seeds"
    if stage.kind == "widthcheck":
        (args,) = parse_args((WidthCheckArguments,), argv)
        return f"{len(args.archs)} architectures × {len(args.widths)} widths × {args.seeds} seeds"
    sweep = load_sweep(write_sweep_file(stage, output_dir, data))
    return f"{len(validate(sweep))} runs, each parsed by the {sweep.task} task"


def run_sweep(path: Path, options: list[str]) -> int:
    """Run the sweep (skipping finished runs; `options` of `python -m lorakit.sweeps run`), then its report; returns
    the run's exit code (1: some failed)."""
    code = sweeps_command.main(["run", str(path), *options])
    if code == INTERRUPTED:
        raise KeyboardInterrupt
    if code == 2:
        raise ConfigError(f"{path}: the sweep tool refused it (its line above)")
    if sweeps_command.main(["report", str(path)]) == 2:
        print(f"{path}: no finished run to report")
    return code


def run_stage(stage: Stage, output_dir: Path, data: dict[str, Path | None], options: list[str] = ()) -> int:
    """Run one stage to its end (0), or with failed runs (1); the time spent is added to ``timings.json``."""
    start = time.perf_counter()
    try:
        if stage.kind == "toy":
            return experiment.run(experiment.prepare(stage_argv(stage, output_dir)))
        if stage.kind == "widthcheck":
            return widthcheck_command.run(widthcheck_command.prepare(stage_argv(stage, output_dir)))
        return run_sweep(write_sweep_file(stage, output_dir, data), list(options))
    finally:
        seconds = time.perf_counter() - start
        total = add_time(output_dir, stage.name, seconds)
        print(f"{stage.name}: {seconds / 60:.1f} min this time, {total / 60:.1f} in all", flush=True)


def add_time(output_dir: Path, name: str, seconds: float) -> float:
    """Add `seconds` to the stage's time in ``timings.json``; returns its total."""
    timings = read_timings(output_dir)
    timings[name] = round(timings.get(name, 0.0) + seconds, 1)
    write_json_atomic(output_dir / TIMINGS, timings)
    return timings[name]


def read_timings(output_dir: Path) -> dict[str, float]:
    found = read_json_file(output_dir / TIMINGS)
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float)} if isinstance(found, dict) else {}
