"""Running a reproduction's stages, each into ``<output_dir>/<stage>/``: the toy sweep (`lorakit.toy.experiment`),
the width check (`lorakit.widthcheck`) and sweeps of real runs (`lorakit.sweeps`, from the ``sweep.yaml`` written
there). Each resumes on its own, so a killed reproduction rerun repeats no finished run; the seconds spent on each
stage, over every invocation, add up in ``timings.json``."""

import copy
import signal
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from lorakit.core.atomic import replace_atomically, write_json_atomic
from lorakit.core.errors import ConfigError
from lorakit.core.parsing import parse_args, settings_to_argv
from lorakit.core.run_folder import read_json_file
from lorakit.reproduce.runs import learned_rule
from lorakit.reproduce.scale import DATA_FLAGS, DATA_SETTINGS, Stage, glue_source
from lorakit.sweeps import __main__ as sweeps_command
from lorakit.sweeps.spec import load_sweep, validate
from lorakit.toy import experiment
from lorakit.toy.arguments import ToyArguments
from lorakit.widthcheck import __main__ as widthcheck_command
from lorakit.widthcheck.arguments import WidthCheckArguments
from lorakit.widthcheck.models import make_batch

TIMINGS, STAGE_RECORD, SWEEP_FILE, LONGER = "timings.json", "stage.json", "sweep.yaml", "longer_"
INTERRUPTED = 130


def stage_argv(stage: Stage, output_dir: Path) -> list[str]:
    return [*settings_to_argv(stage.settings), "--output_dir", str(output_dir / stage.name)]


def sweep_mapping(stage: Stage, output_dir: Path, data: dict[str, Path | None]) -> tuple[dict, str, dict]:
    """The stage's sweep file with its data filled in from the command's data options (unset: the hub), a note
    saying where each part of the data comes from, and the settings filled in. A GLUE stage's metric is its task's
    primary one, named as its runs will report it (MNLI from the hub reports each of its two evaluation sets)."""
    mapping = copy.deepcopy(stage.sweep)
    base, notes, filled = dict(mapping.get("base") or {}), [], {}
    for option in stage.data:
        path = data.get(option)
        if option == "glue":
            settings, note, mapping["metric"] = glue_source(base["task_name"], path)
        elif path is None:
            settings, note = {}, f"{option}: the hub (no {DATA_FLAGS[option]} given)"
        else:
            settings, note = {DATA_SETTINGS[option]: str(path)}, f"{option}: {path}"
        filled |= settings
        notes.append(note)
    mapping |= {"name": stage.name, "output_root": str(output_dir / stage.name), "base": base | filled}
    return mapping, "; ".join(notes) or "the defaults of the sweep's settings", filled


def write_sweep_file(stage: Stage, output_dir: Path, data: dict[str, Path | None], folder: Path | None = None) -> Path:
    """The stage's ``sweep.yaml`` (the same file for the same data, so its runs keep their ids), in the stage's
    folder with its record ``stage.json`` (its data), or alone in `folder`; returns its path."""
    mapping, note, filled = sweep_mapping(stage, output_dir, data)
    if folder is None:
        folder = output_dir / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / STAGE_RECORD, {"stage": stage.name, "data": note, "settings": filled})
    return write_mapping(mapping, folder, f"stage {stage.name}; data: {note}")


def write_mapping(mapping: dict, folder: Path, about: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = f"# Written by python -m lorakit.reproduce ({about})\n" + yaml.safe_dump(mapping, sort_keys=False)
    replace_atomically(folder / SWEEP_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return folder / SWEEP_FILE


def longer_mapping(stage: Stage, output_dir: Path, data: dict[str, Path | None], init: str, lr: float) -> dict:
    """The stage's sweep reduced to one init at one lr and its first seed, trained longer (`stage.longer`), into
    ``<stage>/longer_<init>/``."""
    mapping = sweep_mapping(stage, output_dir, data)[0]
    base = mapping["base"] | stage.longer | {"learning_rate": lr, "lora_init": init}
    seeds, seed = (mapping.get("grid") or {}).get("seed"), base.pop("seed", 42)  # 42: the Trainer's default
    seed = seeds[0] if seeds else seed
    folder = output_dir / stage.name / f"{LONGER}{init}"
    return mapping | {"name": f"{stage.name}_{LONGER}{init}", "output_root": str(folder), "base": base,
                      "grid": {"seed": [seed]}}  # fmt: skip


def best_lrs(folder: Path) -> dict[str, float]:
    """Each init's best lr, from the sweep report's best.csv (none where no lr counted)."""
    if not (folder / "best.csv").exists():
        return {}
    best = pd.read_csv(folder / "best.csv").dropna(subset=["best_lr"])
    return {str(row["lora_init"]): float(row["best_lr"]) for row in best.to_dict("records")}


def run_longer(stage: Stage, output_dir: Path, data: dict[str, Path | None], options: list[str]) -> int:
    """Each init's best lr once more, trained longer: did the best runs stop improving? Returns the worst exit."""
    code = 0
    for init, lr in best_lrs(output_dir / stage.name).items():
        mapping = longer_mapping(stage, output_dir, data, init, lr)
        path = write_mapping(mapping, Path(mapping["output_root"]), f"stage {stage.name}, trained longer")
        code = max(code, run_sweep(path, options))
    return code


def check_same_data(stage: Stage, output_dir: Path, data: dict[str, Path | None]) -> None:
    """A stage that already ran keeps its data: other data options would give its runs other ids, and the rerun
    would start the stage over (from the hub, when an option was forgotten)."""
    record = read_json_file(output_dir / stage.name / STAGE_RECORD)
    filled = sweep_mapping(stage, output_dir, data)[2]
    if isinstance(record, dict) and record.get("settings", filled) != filled:
        raise ConfigError(
            f"stage {stage.name} ran on other data in {output_dir} ({record['data']}); give the same data options, "
            "or another --output_dir"
        )


def check_stage(stage: Stage, output_dir: Path, data: dict[str, Path | None]) -> str:
    """Parse every run of the stage with its runner's own parser (nothing trains, nothing is written into
    `output_dir`); returns what was checked."""
    argv = stage_argv(stage, output_dir)
    if stage.kind == "toy":
        (args,) = parse_args((ToyArguments,), argv)
        args.validate()
        return f"{len(args.widths)} widths × {len(args.inits)} inits × {len(args.learning_rates())} lrs × " \
               f"{len(args.seeds)} seeds"  # fmt: skip
    if stage.kind == "widthcheck":
        (args,) = parse_args((WidthCheckArguments,), argv)
        if args.text:  # a text file of one's own: read and tokenized now (the default is fetched when the stage runs)
            for arch in args.archs:
                make_batch(arch, args.text, args.batch, args.tokens)
        return f"{len(args.archs)} architectures × {len(args.widths)} widths × {args.seeds} seeds"
    check_same_data(stage, output_dir, data)
    with tempfile.TemporaryDirectory() as scratch:
        sweep = load_sweep(write_sweep_file(stage, output_dir, data, Path(scratch)))
        runs = len(validate(sweep))
        rule = learned_rule(sweep, stage.chance)
        if stage.longer:  # its lr is known once the stage has run: checked here at the grid's first
            first = (stage.sweep.get("grid") or {}).get("learning_rate", [1e-3])[0]
            validate(load_sweep(write_mapping(longer_mapping(stage, output_dir, data, "A", first), Path(scratch), "")))
    return f"{runs} runs, each parsed by the {sweep.task} task; learned: {rule}"


def run_sweep(path: Path, options: list[str]) -> int:
    """Run the sweep (skipping finished runs; `options` of `python -m lorakit.sweeps run`), then its report; returns
    the run's exit code (1: some failed). The sweep command's SIGTERM handler is undone after it."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = sweeps_command.main(["run", str(path), *options])
        if code == INTERRUPTED:
            raise KeyboardInterrupt
        if code == 2:
            raise ConfigError(f"{path}: the sweep tool refused it (its line above)")
        sweeps_command.main(["report", str(path)])  # no finished run yet, or a bad metric: its own line says so
    finally:
        signal.signal(signal.SIGTERM, handler)
    return code


def run_stage(stage: Stage, output_dir: Path, data: dict[str, Path | None], options: list[str] = ()) -> int:
    """Run one stage to its end (0), or with failed runs (1); the time spent is added to ``timings.json``."""
    start = time.perf_counter()
    try:
        if stage.kind == "toy":
            return experiment.run(experiment.prepare(stage_argv(stage, output_dir)))
        if stage.kind == "widthcheck":
            return widthcheck_command.run(widthcheck_command.prepare(stage_argv(stage, output_dir)))
        code = run_sweep(write_sweep_file(stage, output_dir, data), list(options))
        return run_longer(stage, output_dir, data, list(options)) if stage.longer and code == 0 else code
    finally:
        seconds = time.perf_counter() - start
        total = add_time(output_dir, stage.name, seconds)
        print(f"{stage.name}: {seconds / 60:.1f} min this time, {total / 60:.1f} min in all", flush=True)


def add_time(output_dir: Path, name: str, seconds: float) -> float:
    """Add `seconds` to the stage's time in ``timings.json``; returns its total."""
    timings = read_timings(output_dir)
    timings[name] = round(timings.get(name, 0.0) + seconds, 1)
    write_json_atomic(output_dir / TIMINGS, timings)
    return timings[name]


def read_timings(output_dir: Path) -> dict[str, float]:
    found = read_json_file(output_dir / TIMINGS)
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float)} if isinstance(found, dict) else {}
